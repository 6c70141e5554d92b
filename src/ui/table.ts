/**
 * Plain-text tables for `ls`, `show` and `profile`: columns padded to their widest cell, numbers
 * right-aligned, and — when a width is given (the terminal's) — the widest text columns shortened
 * with "…" until the table fits. Without a width (stdout is a pipe or a file) nothing is cut, so
 * `grep` and `awk` see whole labels.
 */

export type Cell = string | number | null | undefined;

export interface Column {
  header: string;
  /** Default: right when every cell of the column is a number, else left. */
  align?: "left" | "right";
  /** Never shortened to fit (labels users copy into other commands). Numbers never are. */
  keep?: boolean;
}

export interface TableOptions {
  /** Fit the table to this many characters; undefined or null: no limit. */
  width?: number | null;
  /** A last row under a rule, e.g. totals. */
  footer?: Cell[];
  /** Spaces between columns (default 2). */
  gap?: number;
}

const ELLIPSIS = "…";
/** A shortened column keeps at least this many characters (or its header's width). */
const MIN_WIDTH = 6;

/** Characters as a terminal counts them (code points; our cells hold no wide or combining characters). */
export function displayWidth(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** Cuts `s` to `width` characters, ending in "…" when something was cut. */
export function truncate(s: string, width: number): string {
  if (displayWidth(s) <= width) return s;
  if (width <= 0) return "";
  return `${[...s].slice(0, width - 1).join("")}${ELLIPSIS}`;
}

function text(c: Cell): string {
  if (c === null || c === undefined) return "";
  return typeof c === "number" ? String(c) : c;
}

/** The width to fit tables to: the terminal's columns when stdout is a TTY, else none. */
export function terminalWidth(stream: NodeJS.WriteStream = process.stdout): number | null {
  return stream.isTTY && stream.columns > 0 ? stream.columns : null;
}

/**
 * Renders `rows` under `columns` as lines of text (no trailing newline, no trailing spaces).
 * Cells may be strings or numbers; null and undefined are empty.
 */
export function renderTable(columns: Column[], rows: Cell[][], opts: TableOptions = {}): string {
  const gap = opts.gap ?? 2;
  const all = opts.footer ? [...rows, opts.footer] : rows;
  const cells = all.map((r) => columns.map((_, i) => text(r[i])));
  const align = columns.map((c, i) => {
    if (c.align) return c.align;
    const values = all.map((r) => r[i]).filter((v) => v !== null && v !== undefined && v !== "");
    return values.length > 0 && values.every((v) => typeof v === "number") ? "right" : "left";
  });
  const widths = columns.map((c, i) =>
    Math.max(displayWidth(c.header), ...cells.map((r) => displayWidth(r[i] as string))),
  );

  if (opts.width) fitToWidth(widths, columns, align, gap, opts.width);

  const line = (row: string[]) =>
    row
      .map((s, i) => {
        const w = widths[i] as number;
        const t = truncate(s, w);
        const pad = " ".repeat(w - displayWidth(t));
        return align[i] === "right" ? pad + t : t + pad;
      })
      .join(" ".repeat(gap))
      .trimEnd();

  const out = [line(columns.map((c) => c.header))];
  for (const r of cells.slice(0, rows.length)) out.push(line(r));
  if (opts.footer) {
    out.push(widths.map((w) => "-".repeat(w)).join(" ".repeat(gap)));
    out.push(line(cells[cells.length - 1] as string[]));
  }
  return out.join("\n");
}

/** Shrinks the widest shortenable column, one character at a time, until the table fits or none can shrink. */
function fitToWidth(
  widths: number[],
  columns: Column[],
  align: ("left" | "right")[],
  gap: number,
  width: number,
): void {
  const total = () => widths.reduce((a, b) => a + b, 0) + gap * (widths.length - 1);
  const floor = columns.map((c) =>
    Math.max(MIN_WIDTH, Math.min(displayWidth(c.header), MIN_WIDTH * 2)),
  );
  let excess = total() - width;
  while (excess > 0) {
    let widest = -1;
    for (let i = 0; i < widths.length; i++) {
      if (columns[i]?.keep || align[i] === "right") continue;
      if ((widths[i] as number) <= (floor[i] as number)) continue;
      if (widest < 0 || (widths[i] as number) > (widths[widest] as number)) widest = i;
    }
    if (widest < 0) return;
    widths[widest] = (widths[widest] as number) - 1;
    excess--;
  }
}

const guarded = new WeakSet<NodeJS.WritableStream>();

/**
 * Keeps a write error on `stream` (EPIPE when the reader of a pipe goes away, as with `| head`)
 * from crashing the process through an unhandled 'error' event; writers still see the error in
 * their callbacks or pipelines.
 */
export function guardStdout(stream: NodeJS.WritableStream = process.stdout): void {
  if (guarded.has(stream)) return;
  stream.on("error", () => {});
  guarded.add(stream);
}

/** Writes a command's output to stdout; a reader that went away early is not an error. */
export function writeStdout(
  text: string,
  stream: NodeJS.WritableStream = process.stdout,
): Promise<void> {
  guardStdout(stream);
  return new Promise((resolve, reject) => {
    stream.write(text, (err) => {
      if (!err || (err as NodeJS.ErrnoException).code === "EPIPE") resolve();
      else reject(err);
    });
  });
}
