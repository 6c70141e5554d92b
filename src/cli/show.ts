/**
 * `torchlens show RUN LABEL`: everything the log says about one pass or one layer, with
 * statistics of the saved arrays read from activations.npz; `--json` for programs, `--npy` to
 * stream one pass's array to stdout as a .npy file.
 */
import { pipeline } from "node:stream/promises";
import type { Command } from "commander";
import { usageError } from "../errors.js";
import { NUMPY_AS_TORCH } from "../log/dtypes.js";
import { LogIndex } from "../log/logIndex.js";
import { resolveTarget } from "../log/target.js";
import type { Layer, Pass, RunLog } from "../log/types.js";
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
}

export type ShowView =
  | ({ kind: "pass" } & PassView)
  | { kind: "layer"; layer: Layer; passes: PassView[] };

async function statsOf(pass: Pass, npz: () => Promise<NpzReader>): Promise<ArrayStats | null> {
  if (!pass.saved || pass.array === null) return null;
  const { info, data } = await (await npz()).read(pass.array);
  return arrayStats(info.descr, data);
}

/** Everything `show` reports, reading the arrays it needs. */
export async function showView(log: RunLog, npzPath: string, label: string): Promise<ShowView> {
  const index = new LogIndex(log);
  const target = resolveTarget(index, label, "show");
  let reader: NpzReader | null = null;
  const npz = async () => {
    reader ??= await NpzReader.open(npzPath);
    return reader;
  };
  const view = async (p: Pass): Promise<PassView> => ({
    pass: p,
    child_args: index.childArgs(p),
    stats: await statsOf(p, npz),
  });
  try {
    if (target.kind === "pass") return { kind: "pass", ...(await view(target.pass)) };
    const passes: PassView[] = [];
    for (const p of target.passes) passes.push(await view(p));
    return { kind: "layer", layer: target.layer, passes };
  } finally {
    await (reader as NpzReader | null)?.close();
  }
}

const WIDTH = 14;
const field = (name: string, value: string) => `  ${name.padEnd(WIDTH)}${value}`;
/** A function's name, with its qualified name when that says more. */
const funcText = (func: string, qualname: string | null | undefined) =>
  qualname && qualname !== func ? `${func}  (${qualname})` : func;

function describeStats(s: ArrayStats | null, pass: Pass): string[] {
  if (!s) return [field("array", "not saved (the extract's --layers left it out)")];
  const over = s.over === "magnitude" ? " (over |z|)" : "";
  const lines = [
    field("array", `${pass.array} in activations.npz, ${plural(s.count, "element")}`),
    field("min / max", `${formatStat(s.min)} / ${formatStat(s.max)}${over}`),
    field("mean / std", `${formatStat(s.mean)} / ${formatStat(s.std)}`),
    field("nan / ±inf", `${s.nan} / ${s.posinf} +inf, ${s.neginf} -inf`),
    field("zeros", `${s.zeros} of ${s.count}`),
  ];
  if (s.trues !== undefined) lines.push(field("true", `${s.trues} of ${s.count}`));
  return lines;
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

function describePass(v: PassView): string[] {
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
  return [...lines, ...describeStats(v.stats, p)];
}

function describeLayer(layer: Layer, passes: PassView[], width: number | null): string[] {
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
    ...(s
      ? [
          formatStat(s.min),
          formatStat(s.max),
          formatStat(s.mean),
          formatStat(s.std),
          s.nan,
          s.posinf + s.neginf,
          s.zeros,
        ]
      : ["not saved", "", "", "", "", "", ""]),
  ]);
  const right = "right" as const;
  const columns = [
    { header: "pass", keep: true },
    { header: "shape" },
    { header: "time ms", align: right },
    ...["min", "max", "mean", "std", "nan", "inf", "zeros"].map((header) => ({
      header,
      align: right,
    })),
  ];
  return [...lines, ...renderTable(columns, rows, { width }).split("\n")];
}

export function renderShow(v: ShowView, width: number | null): string {
  return (v.kind === "pass" ? describePass(v) : describeLayer(v.layer, v.passes, width)).join("\n");
}

/** Streams one pass's array to stdout as a .npy file. */
async function writeNpy(log: RunLog, npzPath: string, label: string): Promise<void> {
  const target = resolveTarget(new LogIndex(log), label, "show");
  if (target.kind === "layer" && target.passes.length !== 1) {
    throw usageError(
      `--npy writes one array, and layer ${target.layer.label} has ${target.passes.length} passes`,
      `give one pass label: ${target.passes.map((p) => p.label).join(", ")}`,
    );
  }
  const pass = target.kind === "pass" ? target.pass : (target.passes[0] as Pass);
  if (!pass.saved || pass.array === null) {
    throw usageError(
      `pass ${pass.label} was not saved, so it has no array`,
      "re-run torchlens extract with --layers selecting it (or without --layers)",
    );
  }
  if (process.stdout.isTTY) {
    throw usageError(
      "--npy writes binary .npy data, and stdout is a terminal",
      `redirect it: torchlens show RUN ${pass.label} --npy > ${pass.label.replace(/[^\w.-]/g, "_")}.npy`,
    );
  }
  const reader = await NpzReader.open(npzPath);
  guardStdout();
  try {
    await pipeline(reader.npyStream(pass.array), process.stdout, { end: false });
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
    .action(async (run: string, label: string, o) => {
      if (o.json && o.npy)
        throw usageError("--json and --npy both write to stdout", "use one of them");
      const { log, npz } = await readRun(run);
      if (o.npy) return writeNpy(log, npz, label);
      const view = await showView(log, npz, label);
      await writeStdout(
        `${o.json ? JSON.stringify(view, null, 2) : renderShow(view, terminalWidth())}\n`,
      );
    });
}
