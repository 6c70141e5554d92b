/**
 * `torchlens ls RUN`: the passes of a run as a table (or its layers with `--by layer`, or its
 * module tree with `--modules`); `--json` prints the log's own objects, unchanged, for pipelines.
 */
import type { Command } from "commander";
import { usageError } from "../errors.js";
import { selectPasses, splitSelectors } from "../log/select.js";
import type { Layer, ModuleEntry, Pass, RunLog } from "../log/types.js";
import { readRun } from "../store/readRun.js";
import { formatBytes } from "../ui/progress.js";
import {
  type Cell,
  formatMillis,
  formatShape,
  renderTable,
  terminalWidth,
  writeStdout,
} from "../ui/table.js";

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
    const tree = moduleTree(log);
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
    return renderLayers(log, layers, o.width);
  }
  if (o.json) return JSON.stringify(passes, null, 2);
  return renderPasses(passes, o.width);
}

function renderPasses(passes: Pass[], width: number | null): string {
  const unsaved = passes.some((p) => !p.saved);
  const columns = [
    { header: "label", keep: true },
    { header: "function" },
    { header: "module" },
    { header: "shape" },
    { header: "dtype" },
    { header: "size", align: "right" as const },
    { header: "time ms", align: "right" as const },
    ...(unsaved ? [{ header: "saved" }] : []),
  ];
  const rows = passes.map((p): Cell[] => [
    p.label,
    p.func,
    p.module ?? "",
    formatShape(p.shape),
    p.dtype,
    formatBytes(p.nbytes),
    formatMillis(p.time_ms),
    ...(unsaved ? [p.saved ? "yes" : "no"] : []),
  ]);
  return renderTable(columns, rows, { width });
}

function renderLayers(log: RunLog, layers: Layer[], width: number | null): string {
  const byLabel = new Map(log.passes.map((p) => [p.label, p]));
  const rows = layers.map((l): Cell[] => {
    const passes = l.passes
      .map((label) => byLabel.get(label))
      .filter((p): p is Pass => p !== undefined);
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
      formatMillis(passes.reduce((a, p) => a + p.time_ms, 0)),
    ];
  });
  const columns = [
    { header: "label", keep: true },
    { header: "function" },
    { header: "module" },
    { header: "shape" },
    { header: "dtype" },
    { header: "size", align: "right" as const },
    { header: "passes" },
    { header: "time ms", align: "right" as const },
  ];
  return renderTable(columns, rows, { width });
}

export interface ModuleNode {
  entry: ModuleEntry;
  depth: number;
  /** Parameters of the module and everything nested in it. */
  totalParams: number;
}

/** The module entries depth first from the model down, each with its depth and nested parameter count. */
export function moduleTree(log: RunLog): ModuleNode[] {
  const byAddress = new Map(log.modules.map((m) => [m.address, m]));
  const out: ModuleNode[] = [];
  const seen = new Set<string>();
  const visit = (m: ModuleEntry, depth: number): number => {
    seen.add(m.address);
    const node: ModuleNode = { entry: m, depth, totalParams: m.num_params };
    out.push(node);
    for (const c of m.children) {
      const child = byAddress.get(c);
      if (child && !seen.has(c)) node.totalParams += visit(child, depth + 1);
    }
    return node.totalParams;
  };
  const roots = log.modules.filter((m) => m.parent === null || !byAddress.has(m.parent));
  // Then any entry no parent reached (should not happen): listed rather than lost.
  for (const m of [...roots, ...log.modules]) if (!seen.has(m.address)) visit(m, 0);
  return out;
}

/** How a module address reads in tables: the model itself has the empty address. */
export function moduleName(address: string): string {
  return address === "" ? "(model)" : address;
}

function renderModules(tree: ModuleNode[], width: number | null): string {
  const columns = [
    { header: "module", keep: true },
    { header: "class" },
    { header: "calls" },
    { header: "params" },
    { header: "passes" },
    { header: "time ms", align: "right" as const },
    { header: "size", align: "right" as const },
  ];
  const rows = tree.map(({ entry: m, depth, totalParams }): Cell[] => [
    `${"  ".repeat(depth)}${moduleName(m.address)}`,
    m.class,
    m.num_calls,
    totalParams,
    m.num_passes,
    formatMillis(m.time_ms),
    formatBytes(m.nbytes),
  ]);
  return renderTable(columns, rows, { width });
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
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
