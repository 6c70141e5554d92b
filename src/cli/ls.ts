/**
 * `torchlens ls RUN`: the passes of a run as a table (or its layers with `--by layer`, or its
 * module tree with `--modules`); `--json` prints the log's own objects, unchanged, for pipelines.
 * `--sort` orders the rows (and the JSON array) by time, size or gradient norm; a run made with
 * --grads gets a `grad norm` column.
 */
import type { Command } from "commander";
import { usageError } from "../errors.js";
import { gradPresence, maxGradNorm } from "../graph/shade.js";
import { LogIndex, type ModuleNode } from "../log/logIndex.js";
import { selectPasses, splitSelectors } from "../log/select.js";
import type { Layer, Pass, RunLog } from "../log/types.js";
import { readRun } from "../store/readRun.js";
import { formatBytes, formatMs, formatShape, formatStat, moduleName } from "../ui/format.js";
import { type Cell, type Column, renderTable, terminalWidth, writeStdout } from "../ui/table.js";
import { collect } from "./options.js";

/** What `--sort` orders rows by: execution order, or (largest first) time, size, gradient norm. */
export const SORT_KEYS = ["order", "time", "nbytes", "grad-norm"] as const;
export type SortKey = (typeof SORT_KEYS)[number];

export interface LsOptions {
  layers?: string[];
  json: boolean;
  by: "pass" | "layer";
  modules: boolean;
  /** Default: order. */
  sort?: string;
  /** Fit the table to this width; null: no limit. */
  width: number | null;
}

/** The passes `--layers` picks (all of them without it), in execution order. */
export function selectedPasses(log: RunLog, layers: string[] | undefined): Pass[] {
  if (!layers?.length) return log.passes;
  const wanted = new Set(selectPasses(log, splitSelectors(layers)).labels);
  return log.passes.filter((p) => wanted.has(p.label));
}

/** The sort key `--sort` names, checked: one of SORT_KEYS, and grad-norm only with gradients. */
function sortKey(dir: string, log: RunLog, o: LsOptions): SortKey {
  const key = (o.sort ?? "order") as SortKey;
  if (!SORT_KEYS.includes(key))
    throw usageError(
      `--sort ${JSON.stringify(o.sort)} is not one of ${SORT_KEYS.join(", ")}`,
      "use --sort order (the default: execution order), time, nbytes or grad-norm (largest first)",
    );
  if (key === "grad-norm" && !(log.gradients ?? null))
    throw usageError(
      `--sort grad-norm: ${dir} has no gradients (it was extracted without --grads)`,
      "re-extract with --grads to record them (torchlens extract MODEL -o RUN --grads), or sort by order, time or nbytes",
    );
  if (key !== "order" && o.modules)
    throw usageError(
      "--sort does not apply to --modules (the module tree keeps its nesting)",
      "sort passes or layers (--by layer), or see modules by time with torchlens profile RUN --by module",
    );
  return key;
}

/**
 * Rows ordered by `value`, largest first; rows without a value (a pass with no gradient norm)
 * last. Ties and the valueless keep execution order, since sort is stable.
 */
function sortRows<T>(rows: readonly T[], value: (row: T) => number | null): T[] {
  const keyed = rows.map((row) => ({ row, v: value(row) }));
  keyed.sort((a, b) => {
    if (a.v === null || b.v === null) return a.v === null ? (b.v === null ? 0 : 1) : -1;
    return b.v - a.v;
  });
  return keyed.map((k) => k.row);
}

/** The value a sort key reads from a group of passes (one pass, or a layer's passes). */
function sortValue(key: Exclude<SortKey, "order">, passes: readonly Pass[]): number | null {
  if (key === "grad-norm") return maxGradNorm(passes);
  const field = key === "time" ? (p: Pass) => p.time_ms : (p: Pass) => p.nbytes;
  return passes.reduce((a, p) => a + field(p), 0);
}

/** The text `ls` prints (without the final newline). */
export async function ls(dir: string, o: LsOptions): Promise<string> {
  const { log } = await readRun(dir);
  const sort = sortKey(dir, log, o);
  /** A run made with --grads: tables gain a `grad norm` column (older runs print as before). */
  const grads = Boolean(log.gradients ?? null);
  if (o.modules) {
    if (o.layers?.length)
      throw usageError(
        "--layers does not apply to --modules",
        "list the module tree alone, or passes inside a module with --layers ADDRESS",
      );
    if (o.by !== "pass")
      throw usageError("--by does not apply to --modules", "use one of --modules or --by layer");
    const tree = new LogIndex(log).moduleTree();
    if (o.json)
      return JSON.stringify(
        tree.map((t) => t.entry),
        null,
        2,
      );
    return renderModules(tree, o.width);
  }
  const selected = selectedPasses(log, o.layers);
  if (o.by === "layer") {
    const index = new LogIndex(log);
    const picked = new Set(selected.map((p) => p.layer));
    const inOrder = log.layers.filter((l) => picked.has(l.label));
    const layers =
      sort === "order" ? inOrder : sortRows(inOrder, (l) => sortValue(sort, index.passesOf(l)));
    if (o.json) return JSON.stringify(layers, null, 2);
    return renderLayers(index, layers, o.width, grads);
  }
  const passes = sort === "order" ? selected : sortRows(selected, (p) => sortValue(sort, [p]));
  if (o.json) return JSON.stringify(passes, null, 2);
  return renderPasses(passes, o.width, grads);
}

/**
 * The `grad norm` cell of a pass or a layer (its largest norm): empty where gradients were not
 * recorded, `none` where the target does not depend on it (no gradient, not a zero one).
 */
function gradCell(passes: readonly Pass[]): Cell {
  const norm = maxGradNorm(passes);
  if (norm !== null) return formatStat(norm);
  const presence = gradPresence(passes);
  return presence === "not recorded" ? "" : presence;
}

/** Columns by header: the first is never shortened, sizes and times are right-aligned. */
function columns(headers: string[]): Column[] {
  return headers.map((header, i) => ({
    header,
    keep: i === 0,
    align:
      header === "size" || header === "time ms" || header === "grad norm" ? "right" : undefined,
  }));
}

const PASS_HEADERS = ["label", "function", "module", "shape", "dtype", "size"];

function renderPasses(passes: Pass[], width: number | null, grads: boolean): string {
  const unsaved = passes.some((p) => !p.saved);
  const rows = passes.map((p): Cell[] => [
    p.label,
    p.func,
    p.module ?? "",
    formatShape(p.shape),
    p.dtype,
    formatBytes(p.nbytes),
    formatMs(p.time_ms, "cell"),
    ...(grads ? [gradCell([p])] : []),
    ...(unsaved ? [p.saved ? "yes" : "no"] : []),
  ]);
  const headers = [
    ...PASS_HEADERS,
    "time ms",
    ...(grads ? ["grad norm"] : []),
    ...(unsaved ? ["saved"] : []),
  ];
  return renderTable(columns(headers), rows, { width });
}

function renderLayers(
  index: LogIndex,
  layers: Layer[],
  width: number | null,
  grads: boolean,
): string {
  const rows = layers.map((l): Cell[] => {
    const passes = index.passesOf(l);
    const shapes = new Set(passes.map((p) => formatShape(p.shape)));
    const dtypes = new Set(passes.map((p) => p.dtype));
    return [
      l.label,
      l.func,
      l.module ?? "",
      shapes.size === 1 ? [...shapes][0] : "(varies)",
      dtypes.size === 1 ? [...dtypes][0] : "(varies)",
      formatBytes(passes.reduce((a, p) => a + p.nbytes, 0)),
      l.num_passes,
      formatMs(
        passes.reduce((a, p) => a + p.time_ms, 0),
        "cell",
      ),
      ...(grads ? [gradCell(passes)] : []),
    ];
  });
  const headers = [...PASS_HEADERS, "passes", "time ms", ...(grads ? ["grad norm"] : [])];
  return renderTable(columns(headers), rows, { width });
}

function renderModules(tree: readonly ModuleNode[], width: number | null): string {
  const rows = tree.map(({ entry: m, depth, nested }): Cell[] => [
    `${"  ".repeat(depth)}${moduleName(m.address)}`,
    m.class,
    m.num_calls,
    nested.num_params,
    m.num_passes,
    formatMs(m.time_ms, "cell"),
    formatBytes(m.nbytes),
  ]);
  const headers = ["module", "class", "calls", "params", "passes", "time ms", "size"];
  return renderTable(columns(headers), rows, { width });
}

export function register(cli: Command): void {
  cli
    .command("ls")
    .description("list a run's passes (or layers, or modules) as a table, or as JSON for pipelines")
    .argument("<run>", "run directory made by torchlens extract")
    .option(
      "--layers <selectors>",
      "only these passes: labels, layer labels, functions, module addresses, ordinals, globs (comma-separated; repeatable)",
      collect,
    )
    .option("--by <what>", "one row per pass or per layer: pass | layer", "pass")
    .option(
      "--modules",
      "the module tree: calls, parameters (nested included), passes inside, time, size",
      false,
    )
    .option(
      "--sort <key>",
      `row order: ${SORT_KEYS.join(", ")} (order: execution order, the default; the others largest first, rows without a value last)`,
    )
    .option("--json", "print the log's pass, layer or module objects as a JSON array", false)
    .action(async (run: string, o) => {
      if (o.by !== "pass" && o.by !== "layer")
        throw usageError(
          `--by ${JSON.stringify(o.by)} is not pass or layer`,
          "use --by pass (the default) or --by layer",
        );
      const text = await ls(run, {
        layers: o.layers,
        json: o.json,
        by: o.by,
        modules: o.modules,
        sort: o.sort as string | undefined,
        width: terminalWidth(),
      });
      await writeStdout(`${text}\n`);
    });
}
