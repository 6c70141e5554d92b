/**
 * `torchlens ls RUN`: the passes of a run as a table (or its layers with `--by layer`, or its
 * module tree with `--modules`); `--json` prints the log's own objects, unchanged, for pipelines.
 */
import type { Command } from "commander";
import { usageError } from "../errors.js";
import { LogIndex, type ModuleNode } from "../log/logIndex.js";
import { selectPasses, splitSelectors } from "../log/select.js";
import type { Layer, Pass, RunLog } from "../log/types.js";
import { readRun } from "../store/readRun.js";
import { formatBytes, formatMs, formatShape, moduleName } from "../ui/format.js";
import { type Cell, type Column, renderTable, terminalWidth, writeStdout } from "../ui/table.js";
import { collect } from "./options.js";

export interface LsOptions {
  layers?: string[];
  json: boolean;
  by: "pass" | "layer";
  modules: boolean;
  /** Fit the table to this width; null: no limit. */
  width: number | null;
}

/** The passes `--layers` picks (all of them without it), in execution order. */
export function selectedPasses(log: RunLog, layers: string[] | undefined): Pass[] {
  if (!layers?.length) return log.passes;
  const wanted = new Set(selectPasses(log, splitSelectors(layers)).labels);
  return log.passes.filter((p) => wanted.has(p.label));
}

/** The text `ls` prints (without the final newline). */
export async function ls(dir: string, o: LsOptions): Promise<string> {
  const { log } = await readRun(dir);
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
  const passes = selectedPasses(log, o.layers);
  if (o.by === "layer") {
    const picked = new Set(passes.map((p) => p.layer));
    const layers = log.layers.filter((l) => picked.has(l.label));
    if (o.json) return JSON.stringify(layers, null, 2);
    return renderLayers(new LogIndex(log), layers, o.width);
  }
  if (o.json) return JSON.stringify(passes, null, 2);
  return renderPasses(passes, o.width);
}

/** Columns by header: the first is never shortened, sizes and times are right-aligned. */
function columns(headers: string[]): Column[] {
  return headers.map((header, i) => ({
    header,
    keep: i === 0,
    align: header === "size" || header === "time ms" ? "right" : undefined,
  }));
}

const PASS_HEADERS = ["label", "function", "module", "shape", "dtype", "size"];

function renderPasses(passes: Pass[], width: number | null): string {
  const unsaved = passes.some((p) => !p.saved);
  const rows = passes.map((p): Cell[] => [
    p.label,
    p.func,
    p.module ?? "",
    formatShape(p.shape),
    p.dtype,
    formatBytes(p.nbytes),
    formatMs(p.time_ms, "cell"),
    ...(unsaved ? [p.saved ? "yes" : "no"] : []),
  ]);
  const headers = [...PASS_HEADERS, "time ms", ...(unsaved ? ["saved"] : [])];
  return renderTable(columns(headers), rows, { width });
}

function renderLayers(index: LogIndex, layers: Layer[], width: number | null): string {
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
    ];
  });
  return renderTable(columns([...PASS_HEADERS, "passes", "time ms"]), rows, { width });
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
        width: terminalWidth(),
      });
      await writeStdout(`${text}\n`);
    });
}
