/**
 * `torchlens graph RUN`: the run's computational graph, rolled (one node per layer, loops folded
 * into loop-back edges) or unrolled (one node per pass), with modules as nested clusters; written
 * as SVG (laid out by the bundled WebAssembly Graphviz in a worker thread) or as DOT; `--color
 * grad-norm` shades nodes by gradient norm in a run made with --grads. `writeGraph` is what
 * `extract --graph` calls on a log it has just built.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { usageError } from "../errors.js";
import { DIRECTIONS, type Direction, toDotText } from "../graph/dot.js";
import { renderSvg } from "../graph/render.js";
import {
  buildView,
  COLOR_BY,
  type ColorBy,
  type GraphMode,
  type GraphView,
} from "../graph/view.js";
import { selectPasses, splitSelectors } from "../log/select.js";
import type { RunLog } from "../log/types.js";
import { fsError } from "../store/files.js";
import { readRun } from "../store/readRun.js";
import { formatMs } from "../ui/format.js";
import { Progress } from "../ui/progress.js";
import { writeStdout } from "../ui/table.js";
import { collect } from "./options.js";

export interface GraphOptions {
  /** Default: rolled. */
  mode?: GraphMode;
  /** Module levels drawn as clusters; deeper ones fold into one node. Default: all levels. */
  depth?: number | null;
  /** Default: TB. */
  direction?: Direction;
  /** Selectors (as for `--layers` elsewhere) of the passes to highlight. */
  layers?: string[];
  /** Shade nodes by this (grad-norm: a run made with --grads); default: the kinds' fills. */
  color?: ColorBy | null;
}

export interface WriteGraphOptions extends GraphOptions {
  /** A .svg or .dot (.gv) path, or "-" for DOT on stdout. */
  out: string;
  /** A status line to update while the layout runs (extract passes its own); default: a new one. */
  progress?: Progress;
}

export interface GraphSummary {
  out: string;
  format: "svg" | "dot";
  mode: GraphMode;
  nodes: number;
  edges: number;
  clusters: number;
  /** Building the view and its DOT text. */
  build_ms: number;
  /** Loading Graphviz and laying the graph out (0 for DOT). */
  layout_ms: number;
  /** Graphviz's warnings, each once (SVG only). */
  warnings: string[];
}

/** The file name `graph` writes into the run when no -o is given. */
export function defaultGraphFile(mode: GraphMode): string {
  return mode === "unrolled" ? "graph-unrolled.svg" : "graph.svg";
}

function formatOf(out: string): "svg" | "dot" {
  if (out === "-") return "dot";
  const ext = path.extname(out).toLowerCase();
  if (ext === ".svg") return "svg";
  if (ext === ".dot" || ext === ".gv") return "dot";
  throw usageError(
    `-o ${JSON.stringify(out)}: torchlens draws .svg or .dot files`,
    "give a file ending in .svg or .dot, or -o - for DOT on stdout (convert DOT to other formats with Graphviz's dot)",
  );
}

/** The view and DOT text of a log's graph; `--layers` selectors resolved to highlighted passes. */
export function graphDot(
  log: RunLog,
  options: GraphOptions = {},
): { view: GraphView; dot: string } {
  const color = options.color ?? null;
  if (color === "grad-norm" && !(log.gradients ?? null))
    throw usageError(
      "--color grad-norm: the run has no gradients (it was extracted without --grads)",
      "re-extract with --grads (torchlens extract MODEL -o RUN --grads), then draw it with --color grad-norm",
    );
  const highlight = options.layers?.length
    ? new Set(selectPasses(log, splitSelectors(options.layers), "--layers").labels)
    : null;
  const view = buildView(log, {
    mode: options.mode ?? "rolled",
    depth: options.depth ?? null,
    highlight,
    ...(color ? { color } : {}),
  });
  return { view, dot: toDotText(view, { direction: options.direction ?? "TB" }) };
}

/** An output file's directory must exist and be writable: checked before a long layout. */
async function checkWritable(out: string): Promise<void> {
  const dir = path.dirname(path.resolve(out));
  const stat = await fs.stat(dir).catch(() => null);
  if (!stat?.isDirectory())
    throw usageError(
      `cannot write ${out}: the directory ${dir} does not exist`,
      "create the directory first, or give another path with -o",
    );
  try {
    await fs.access(dir, fs.constants.W_OK);
  } catch {
    throw usageError(
      `cannot write ${out}: the directory ${dir} is not writable`,
      "give a path you can write to with -o",
    );
  }
  const existing = await fs.stat(out).catch(() => null);
  if (existing?.isDirectory())
    throw usageError(`cannot write ${out}: it is a directory`, "give a file name ending in .svg");
}

/** Written under a temporary name and renamed, so a failed write leaves no half file. */
async function writeAtomic(out: string, text: string): Promise<void> {
  const tmp = path.join(path.dirname(out), `.${path.basename(out)}.tmp-${process.pid}`);
  try {
    await fs.writeFile(tmp, text);
    await fs.rename(tmp, out);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw fsError(err, `writing ${out}`);
  }
}

/** Draws a log's graph into `options.out` (SVG or DOT by its extension; "-": DOT on stdout). */
export async function writeGraph(log: RunLog, options: WriteGraphOptions): Promise<GraphSummary> {
  const format = formatOf(options.out);
  if (options.out !== "-") await checkWritable(options.out);
  const t0 = performance.now();
  const { view, dot } = graphDot(log, options);
  const summary: GraphSummary = {
    out: options.out,
    format,
    mode: view.mode,
    nodes: view.nodes.length,
    edges: view.edges.length,
    clusters: view.clusters.length,
    build_ms: Math.round(performance.now() - t0),
    layout_ms: 0,
    warnings: [],
  };
  if (options.out === "-") {
    await writeStdout(dot);
    return summary;
  }
  if (format === "dot") {
    await writeAtomic(options.out, dot);
    return summary;
  }
  const progress = options.progress ?? new Progress();
  const own = !options.progress;
  const what = `laying out the ${view.mode} graph: ${view.nodes.length} nodes, ${view.edges.length} edges`;
  if (own) progress.start(what);
  else progress.update(what, 0);
  try {
    const t1 = performance.now();
    const { svg, warnings } = await renderSvg(dot);
    summary.layout_ms = Math.round(performance.now() - t1);
    summary.warnings = warnings;
    await writeAtomic(options.out, svg);
  } finally {
    if (own) progress.stop();
  }
  return summary;
}

export function describeGraph(s: GraphSummary): string {
  const where = path.relative(process.cwd(), path.resolve(s.out)) || s.out;
  const timing = s.format === "svg" ? ` (layout ${formatMs(s.layout_ms)})` : "";
  const lines = [
    `drew the ${s.mode} graph: ${s.nodes} nodes, ${s.edges} edges, ${s.clusters} module clusters${timing} → ${where}`,
  ];
  for (const w of s.warnings.slice(0, 5)) lines.push(`graphviz: ${w}`);
  if (s.warnings.length > 5) lines.push(`graphviz: … and ${s.warnings.length - 5} more warnings`);
  return lines.join("\n");
}

/** `torchlens graph RUN [options]`: reads the run, writes the graph, returns what was drawn. */
export async function graph(dir: string, options: GraphOptions & { out?: string }) {
  const { log } = await readRun(dir);
  const mode = options.mode ?? "rolled";
  const out = options.out ?? path.join(dir, defaultGraphFile(mode));
  return writeGraph(log, { ...options, mode, out });
}

function depthValue(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError("not a whole number (0 or more)");
  return Number(value);
}

function colorValue(value: string): ColorBy {
  if (!COLOR_BY.includes(value as ColorBy))
    throw new InvalidArgumentError(
      `not ${COLOR_BY.join(" or ")} (the only way to color nodes so far; needs a run made with --grads)`,
    );
  return value as ColorBy;
}

function directionValue(value: string): Direction {
  const d = value.toUpperCase() as Direction;
  if (!DIRECTIONS.includes(d))
    throw new InvalidArgumentError(`not one of ${DIRECTIONS.join(", ")}`);
  return d;
}

export function register(cli: Command): void {
  cli
    .command("graph")
    .description(
      "draw a run's computational graph — rolled (a node per layer, loops folded) or unrolled (a node per pass), modules as clusters — as SVG or DOT",
    )
    .argument("<run>", "run directory made by torchlens extract")
    .option(
      "-o, --out <file>",
      "a .svg or .dot file, or - for DOT on stdout (default: RUN/graph.svg, or RUN/graph-unrolled.svg with --unrolled)",
    )
    .addOption(
      new Option(
        "--rolled",
        "one node per layer showing its pass count, loop-back edges for recurrence (the default)",
      ).conflicts("unrolled"),
    )
    .option("--unrolled", "one node per pass, one cluster per module call")
    .option(
      "--depth <n>",
      "draw modules down to this nesting level as clusters; deeper modules fold into one node each (0: fold every module)",
      depthValue,
    )
    .option("--direction <dir>", `layout direction: ${DIRECTIONS.join(", ")}`, directionValue, "TB")
    .option(
      "-l, --layers <selectors>",
      "highlight these passes: labels, layer labels, functions, module addresses, ordinals, globs (comma-separated; repeatable)",
      collect,
    )
    .option(
      "--color <what>",
      `shade nodes by: ${COLOR_BY.join(", ")} (the gradient norm, log scale, of a run made with --grads; a rolled node takes its passes' largest)`,
      colorValue,
    )
    .action(async (run: string, o) => {
      const summary = await graph(run, {
        out: o.out as string | undefined,
        mode: o.unrolled ? "unrolled" : "rolled",
        depth: (o.depth as number | undefined) ?? null,
        direction: o.direction as Direction,
        layers: o.layers as string[] | undefined,
        color: (o.color as ColorBy | undefined) ?? null,
      });
      if (summary.out !== "-") process.stderr.write(`${describeGraph(summary)}\n`);
    });
}
