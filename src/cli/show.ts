/**
 * `torchlens show RUN LABEL`: everything the log says about one pass or one layer, with
 * statistics of the saved arrays read from activations.npz (and, in a run made with --grads, of
 * their gradients read from gradients.npz); `--json` for programs, `--npy` to stream one pass's
 * array (`--npy --grad`: its gradient) to stdout as a .npy file.
 */
import { pipeline } from "node:stream/promises";
import type { Command } from "commander";
import { usageError } from "../errors.js";
import { NUMPY_AS_TORCH } from "../log/dtypes.js";
import { LogIndex } from "../log/logIndex.js";
import { resolveTarget } from "../log/target.js";
import type { GradTarget, Layer, Pass, PassGrad, RunLog } from "../log/types.js";
import { type ArrayStats, arrayStats } from "../stats/arrayStats.js";
import { NpzReader } from "../store/npzRead.js";
import { readRun } from "../store/readRun.js";
import { formatBytes, formatMs, formatShape, formatStat } from "../ui/format.js";
import { type Cell, guardStdout, renderTable, terminalWidth, writeStdout } from "../ui/table.js";
import { plural } from "../util/text.js";

/** One pass as `show --json` gives it. */
export interface PassView {
  pass: Pass;
  /** For each of `pass.children`, the argument position(s) this pass takes in it. */
  child_args: string[];
  /** Statistics of the saved array; null when the pass was not saved. */
  stats: ArrayStats | null;
  /**
   * Statistics of the pass's saved gradient; null when it has none saved. Only in runs made with
   * --grads: older runs' JSON keeps exactly the fields it always had.
   */
  grad_stats?: ArrayStats | null;
}

export type ShowView =
  | ({ kind: "pass" } & PassView)
  | { kind: "layer"; layer: Layer; passes: PassView[] };

async function statsOf(pass: Pass, npz: () => Promise<NpzReader>): Promise<ArrayStats | null> {
  if (!pass.saved || pass.array === null) return null;
  const { info, data } = await (await npz()).read(pass.array);
  return arrayStats(info.descr, data);
}

/** A pass's gradient as the log records it; /1 logs have no `grad` at all (read as null). */
const gradOf = (p: Pass): PassGrad | null => p.grad ?? null;

async function gradStatsOf(pass: Pass, npz: () => Promise<NpzReader>): Promise<ArrayStats | null> {
  const grad = gradOf(pass);
  if (grad?.status !== "saved") return null;
  const { info, data } = await (await npz()).read(grad.array);
  return arrayStats(info.descr, data);
}

/** Opens an npz on first use, so a view that needs none of its arrays never opens it. */
function lazyReader(file: string): { get: () => Promise<NpzReader>; close: () => Promise<void> } {
  let reader: NpzReader | null = null;
  return {
    get: async () => {
      reader ??= await NpzReader.open(file);
      return reader;
    },
    close: async () => (reader as NpzReader | null)?.close(),
  };
}

/**
 * Everything `show` reports, reading the arrays it needs; with `gradsPath` (the run's
 * gradients.npz, for a run made with --grads) each pass's gradient statistics too.
 */
export async function showView(
  log: RunLog,
  npzPath: string,
  label: string,
  gradsPath: string | null = null,
): Promise<ShowView> {
  const index = new LogIndex(log);
  const target = resolveTarget(index, label, "show");
  const acts = lazyReader(npzPath);
  const grads = gradsPath !== null && log.gradients ? lazyReader(gradsPath) : null;
  const view = async (p: Pass): Promise<PassView> => {
    const v: PassView = {
      pass: p,
      child_args: index.childArgs(p),
      stats: await statsOf(p, acts.get),
    };
    if (grads) v.grad_stats = await gradStatsOf(p, grads.get);
    return v;
  };
  try {
    if (target.kind === "pass") return { kind: "pass", ...(await view(target.pass)) };
    const passes: PassView[] = [];
    for (const p of target.passes) passes.push(await view(p));
    return { kind: "layer", layer: target.layer, passes };
  } finally {
    await acts.close();
    await grads?.close();
  }
}

const WIDTH = 14;
const field = (name: string, value: string) => `  ${name.padEnd(WIDTH)}${value}`;
/** A function's name, with its qualified name when that says more. */
const funcText = (func: string, qualname: string | null | undefined) =>
  qualname && qualname !== func ? `${func}  (${qualname})` : func;

/** The statistics lines of one array; `heading` names it (its key and file, its size). */
function statsLines(s: ArrayStats, heading: string[]): string[] {
  const over = s.over === "magnitude" ? " (over |z|)" : "";
  const lines = [
    ...heading,
    field("min / max", `${formatStat(s.min)} / ${formatStat(s.max)}${over}`),
    field("mean / std", `${formatStat(s.mean)} / ${formatStat(s.std)}`),
    field("nan / ±inf", `${s.nan} / ${s.posinf} +inf, ${s.neginf} -inf`),
    field("zeros", `${s.zeros} of ${s.count}`),
  ];
  if (s.trues !== undefined) lines.push(field("true", `${s.trues} of ${s.count}`));
  return lines;
}

function describeStats(s: ArrayStats | null, pass: Pass): string[] {
  if (!s) return [field("array", "not saved (the extract's --layers left it out)")];
  return statsLines(s, [
    field("array", `${pass.array} in activations.npz, ${plural(s.count, "element")}`),
  ]);
}

/** What the gradients are of, in words: `the sum of the outputs`, `output_1[0, 207]`. */
export function targetText(t: GradTarget): string {
  if (t.kind === "sum") return "the sum of the outputs";
  if (t.kind === "index") return `${t.output}[${t.index.join(", ")}]`;
  return `${t.function}(output, *inputs)`;
}

/** A gradient's L2 norm as the log gives it (null: not finite). */
const normText = (norm: number | null) => (norm === null ? "not finite" : formatStat(norm));

/**
 * The gradient lines under the activation's, in a run made with --grads: a pass the target does
 * not depend on says so rather than showing zeros (it has no gradient at all).
 */
function describeGrad(s: ArrayStats | null, pass: Pass, target: GradTarget): string[] {
  const grad = gradOf(pass);
  const of = field("target", targetText(target));
  if (grad === null) return [field("gradient", "not saved (the extract's --layers left it out)")];
  if (grad.status === "none")
    return [field("gradient", "none: the target does not depend on this pass"), of];
  if (!s) return [field("gradient", `${grad.array} in gradients.npz`), of];
  return statsLines(s, [
    field("gradient", `${grad.array} in gradients.npz, ${plural(s.count, "element")}`),
    of,
    field("norm", normText(grad.norm)),
  ]);
}

function flags(p: Pass): string[] {
  const named: [boolean, string][] = [
    [p.is_input, "input"],
    [p.is_output, "output"],
    [p.is_buffer, "buffer"],
    [p.is_param, "parameter"],
    [p.is_internal_source, "internal source"],
    [p.is_inplace, "in-place"],
    [p.is_dead_end, "dead end"],
    [p.is_branch_point, "branch point"],
  ];
  return named.filter(([on]) => on).map(([, name]) => name);
}

function describePass(v: PassView, target: GradTarget | null): string[] {
  const p = v.pass;
  const stored =
    p.stored_dtype && NUMPY_AS_TORCH[p.stored_dtype] !== p.dtype
      ? `  (stored as ${NUMPY_AS_TORCH[p.stored_dtype] ?? p.stored_dtype}, ${p.stored_dtype})`
      : "";
  const parents = p.parents.map((x, i) => `${x} (arg ${p.parent_args[i] ?? "?"})`);
  const children = p.children.map((x, i) =>
    v.child_args[i] ? `${x} (arg ${v.child_args[i]})` : x,
  );
  const distance = (d: number | null) => (d === null ? "-" : String(d));
  const lines = [
    `pass ${p.label}   layer ${p.layer}, pass ${p.pass} of ${p.num_passes}`,
    field("function", funcText(p.func, p.qualname)),
    field("kind", p.kind),
    field("module", p.module ?? "-"),
    field("module stack", p.modules.length ? p.modules.join(" > ") : "-"),
    field("parents", parents.length ? parents.join(", ") : "-"),
    field("children", children.length ? children.join(", ") : "-"),
    field("params", p.params.length ? `${p.params.join(", ")}  (${p.num_params} elements)` : "-"),
    field("args", Object.keys(p.args).length ? JSON.stringify(p.args) : "-"),
    field("shape", formatShape(p.shape)),
    field("dtype", `${p.dtype}${stored}`),
    field("device", p.device),
    field("size", `${formatBytes(p.nbytes)} (${plural(p.nbytes, "byte")})`),
    field("time", formatMs(p.time_ms, "op")),
    field(
      "distance",
      `${distance(p.distance_from_input)} from input, ${distance(p.distance_to_output)} to output`,
    ),
    field("flags", flags(p).join(", ") || "-"),
  ];
  for (const [name, value] of [
    ["input path", p.input_path],
    ["output path", p.output_path],
    ["address", p.address],
    ["note", p.note],
  ] as const) {
    if (value !== undefined) lines.push(field(name, value));
  }
  const grad = target ? describeGrad(v.grad_stats ?? null, p, target) : [];
  return [...lines, ...describeStats(v.stats, p), ...grad];
}

/** The statistics cells of one table row, or `missing` and blanks when there is no array. */
function statCells(s: ArrayStats | null, missing: string): Cell[] {
  if (!s) return [missing, "", "", "", "", "", ""];
  return [
    formatStat(s.min),
    formatStat(s.max),
    formatStat(s.mean),
    formatStat(s.std),
    s.nan,
    s.posinf + s.neginf,
    s.zeros,
  ];
}

const right = "right" as const;
const STAT_COLUMNS = ["min", "max", "mean", "std", "nan", "inf", "zeros"].map((header) => ({
  header,
  align: right,
}));

/** A layer's gradient table: one row per pass, its norm then the same statistics. */
function gradTable(passes: PassView[], target: GradTarget, width: number | null): string[] {
  const rows = passes.map(({ pass: p, grad_stats: s }): Cell[] => {
    const grad = gradOf(p);
    if (grad === null) return [p.label, "", "not saved", "", "", "", "", "", ""];
    if (grad.status === "none") return [p.label, "none", "", "", "", "", "", "", ""];
    return [p.label, normText(grad.norm), ...statCells(s ?? null, "not read")];
  });
  const columns = [
    { header: "pass", keep: true },
    { header: "grad norm", align: right },
    ...STAT_COLUMNS,
  ];
  return [
    "",
    `gradients of ${targetText(target)} (none: the target does not depend on the pass)`,
    ...renderTable(columns, rows, { width }).split("\n"),
  ];
}

function describeLayer(
  layer: Layer,
  passes: PassView[],
  width: number | null,
  target: GradTarget | null,
): string[] {
  const first = passes[0]?.pass;
  const shapes = [...new Set(passes.map((v) => formatShape(v.pass.shape)))];
  const total = (f: (p: Pass) => number) => passes.reduce((a, v) => a + f(v.pass), 0);
  const ms = total((p) => p.time_ms);
  const lines = [
    `layer ${layer.label}   ${plural(layer.num_passes, "pass", "passes")}`,
    field("function", funcText(layer.func, first?.qualname)),
    field("module", layer.module ?? "-"),
    field(
      "params",
      layer.params.length
        ? `${layer.params.join(", ")}  (${first?.num_params ?? 0} elements)`
        : "-",
    ),
    field("shape", shapes.join(", ")),
    field("dtype", [...new Set(passes.map((v) => v.pass.dtype))].join(", ")),
    field("size", formatBytes(total((p) => p.nbytes))),
    field("time", formatMs(ms, "op")),
    "",
  ];
  const rows = passes.map(({ pass: p, stats: s }): Cell[] => [
    p.label,
    formatShape(p.shape),
    formatMs(p.time_ms, "cell"),
    ...statCells(s, "not saved"),
  ]);
  const columns = [
    { header: "pass", keep: true },
    { header: "shape" },
    { header: "time ms", align: right },
    ...STAT_COLUMNS,
  ];
  const grads = target ? gradTable(passes, target, width) : [];
  return [...lines, ...renderTable(columns, rows, { width }).split("\n"), ...grads];
}

/** The text of a view; `target`: the run's gradient target (null for a run without gradients). */
export function renderShow(
  v: ShowView,
  width: number | null,
  target: GradTarget | null = null,
): string {
  return (
    v.kind === "pass" ? describePass(v, target) : describeLayer(v.layer, v.passes, width, target)
  ).join("\n");
}

/** The key of the array `--npy` streams: the pass's activation, or with `grad` its gradient. */
function npyKey(log: RunLog, pass: Pass, grad: boolean): string {
  if (!grad) {
    if (!pass.saved || pass.array === null) {
      throw usageError(
        `pass ${pass.label} was not saved, so it has no array`,
        "re-run torchlens extract with --layers selecting it (or without --layers)",
      );
    }
    return pass.array;
  }
  const g = gradOf(pass);
  if (g === null) {
    throw usageError(
      `pass ${pass.label} has no saved gradient: the extract's --layers left it out`,
      "re-run torchlens extract --grads with --layers selecting it (or without --layers)",
    );
  }
  if (g.status === "none") {
    throw usageError(
      `pass ${pass.label} has no gradient: the target${log.gradients ? ` (${targetText(log.gradients.target)})` : ""} does not depend on it`,
      "pick a pass the target depends on (`torchlens ls RUN` shows each pass's grad norm, `none` where there is no gradient)",
    );
  }
  return g.array;
}

/** --grad asks for a gradient: only with --npy, and only from a run made with --grads. */
function checkGradFlag(log: RunLog, run: string, o: { grad: boolean; npy: boolean }): void {
  if (!o.grad) return;
  if (!o.npy)
    throw usageError(
      "--grad goes with --npy (it streams the pass's gradient instead of its activation)",
      "use --npy --grad; without --npy, show prints the gradient statistics of a run made with --grads anyway",
    );
  if (!(log.gradients ?? null))
    throw usageError(
      `${run} has no gradients: it was extracted without --grads`,
      "re-extract with --grads (torchlens extract MODEL -o RUN --grads), then show --npy --grad",
    );
}

/** Streams one pass's array to stdout as a .npy file; with `grad`, its gradient from `npzPath`
 * (then the run's gradients.npz). */
async function writeNpy(log: RunLog, npzPath: string, label: string, grad = false): Promise<void> {
  const target = resolveTarget(new LogIndex(log), label, "show");
  if (target.kind === "layer" && target.passes.length !== 1) {
    throw usageError(
      `--npy writes one array, and layer ${target.layer.label} has ${target.passes.length} passes`,
      `give one pass label: ${target.passes.map((p) => p.label).join(", ")}`,
    );
  }
  const pass = target.kind === "pass" ? target.pass : (target.passes[0] as Pass);
  const key = npyKey(log, pass, grad);
  if (process.stdout.isTTY) {
    throw usageError(
      "--npy writes binary .npy data, and stdout is a terminal",
      `redirect it: torchlens show RUN ${pass.label} --npy${grad ? " --grad" : ""} > ${pass.label.replace(/[^\w.-]/g, "_")}${grad ? ".grad" : ""}.npy`,
    );
  }
  const reader = await NpzReader.open(npzPath);
  guardStdout();
  try {
    await pipeline(reader.npyStream(key), process.stdout, { end: false });
  } catch (err) {
    // The reader of the pipe went away (`| head -c 100`): not our failure.
    if ((err as NodeJS.ErrnoException).code !== "EPIPE") throw err;
  } finally {
    await reader.close();
  }
}

export function register(cli: Command): void {
  cli
    .command("show")
    .description("everything about one pass or layer, with statistics of its saved array")
    .argument("<run>", "run directory made by torchlens extract")
    .argument(
      "<label>",
      "a pass label (relu_1_3:2), a layer label, or any selector that picks one pass or one layer",
    )
    .option("--json", "print the pass (or layer and its passes) and the statistics as JSON", false)
    .option(
      "--npy",
      "write the pass's array to stdout as a .npy file (redirect it: > x.npy)",
      false,
    )
    .option(
      "--grad",
      "with --npy: write the pass's gradient (from gradients.npz) instead of its activation",
      false,
    )
    .action(async (run: string, label: string, o) => {
      if (o.json && o.npy)
        throw usageError("--json and --npy both write to stdout", "use one of them");
      const { log, npz, gradsNpz } = await readRun(run);
      checkGradFlag(log, run, o);
      if (o.npy) return writeNpy(log, o.grad ? (gradsNpz as string) : npz, label, o.grad);
      const view = await showView(log, npz, label, gradsNpz);
      const target = log.gradients?.target ?? null;
      await writeStdout(
        `${o.json ? JSON.stringify(view, null, 2) : renderShow(view, terminalWidth(), target)}\n`,
      );
    });
}
