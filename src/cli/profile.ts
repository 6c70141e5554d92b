/**
 * `torchlens profile RUN`: where the forward pass spent its time and memory — per pass, per
 * layer or per module: time (ms and % of the total), output bytes, parameters used and their
 * bytes; sorted by time, the top N, with totals over the whole run.
 *
 * Per module, time, bytes, passes and parameters include nested modules (as `ls --modules`
 * shows them), and `self ms` is the time of the passes whose innermost module it is. Totals are
 * always over every pass and every parameter of the run, whatever `--top` shows.
 */
import { type Command, InvalidArgumentError } from "commander";
import { usageError } from "../errors.js";
import { LogIndex } from "../log/logIndex.js";
import type { Pass, RunLog } from "../log/types.js";
import { readRun } from "../store/readRun.js";
import { formatBytes, formatMs, moduleName } from "../ui/format.js";
import { type Cell, type Column, renderTable, terminalWidth, writeStdout } from "../ui/table.js";

/** What one row stands for. */
export type ProfileBy = "pass" | "layer" | "module";

/** `--by op`, the earlier name of `--by pass`: still accepted, with the same output, for one release. */
const BY_ALIASES = new Map<string, ProfileBy>([["op", "pass"]]);

export interface ProfileRow {
  /** Pass label, layer label, or module address ("" is the model itself). */
  name: string;
  func?: string;
  class?: string;
  module?: string | null;
  calls?: number;
  passes: number;
  time_ms: number;
  /** Modules only: time of the passes whose innermost module this is. */
  self_ms?: number;
  time_pct: number;
  nbytes: number;
  num_params: number;
  param_bytes: number;
}

export interface ProfileTotals {
  passes: number;
  time_ms: number;
  nbytes: number;
  num_params: number;
  param_bytes: number;
}

export interface Profile {
  /** What a row stands for; per-pass rows say "op", as the JSON always has (pipelines read it). */
  by: "op" | "layer" | "module";
  /** How many rows there are in all; `rows` holds the top ones. */
  num_rows: number;
  rows: ProfileRow[];
  totals: ProfileTotals;
}

const sum = (passes: Pass[], f: (p: Pass) => number) => passes.reduce((a, p) => a + f(p), 0);

/** Every row of one kind, in execution (or tree) order; `pct` gives a time's share of the total. */
function rowsBy(index: LogIndex, by: ProfileBy, pct: (ms: number) => number): ProfileRow[] {
  if (by === "pass")
    return index.log.passes.map((p) => ({
      name: p.label,
      func: p.func,
      module: p.module,
      passes: 1,
      time_ms: p.time_ms,
      time_pct: pct(p.time_ms),
      nbytes: p.nbytes,
      ...index.paramTotals(p.params),
    }));
  if (by === "layer")
    return index.log.layers.map((l) => {
      const passes = index.passesOf(l);
      const time = sum(passes, (p) => p.time_ms);
      return {
        name: l.label,
        func: l.func,
        module: l.module,
        passes: passes.length,
        time_ms: time,
        time_pct: pct(time),
        nbytes: sum(passes, (p) => p.nbytes),
        ...index.paramTotals(passes.flatMap((p) => p.params)),
      };
    });
  const selfMs = new Map<string, number>();
  for (const p of index.log.passes)
    selfMs.set(p.module ?? "", (selfMs.get(p.module ?? "") ?? 0) + p.time_ms);
  return index.moduleTree().map(({ entry: m, nested }) => ({
    name: m.address,
    class: m.class,
    calls: m.num_calls,
    passes: m.num_passes,
    time_ms: m.time_ms,
    self_ms: selfMs.get(m.address) ?? 0,
    time_pct: pct(m.time_ms),
    nbytes: m.nbytes,
    ...nested,
  }));
}

/** The profile of a run: all rows sorted by time (slowest first), cut to `top` (0: all). */
export function profileRun(log: RunLog, by: ProfileBy, top: number): Profile {
  const index = new LogIndex(log);
  const totals: ProfileTotals = {
    passes: log.passes.length,
    time_ms: sum(log.passes, (p) => p.time_ms),
    nbytes: sum(log.passes, (p) => p.nbytes),
    ...index.paramTotals(index.params.keys()),
  };
  const pct = (ms: number) => (totals.time_ms > 0 ? (100 * ms) / totals.time_ms : 0);
  const rows = rowsBy(index, by, pct);
  // Slowest first; ties keep execution (or tree) order, since sort is stable.
  const sorted = [...rows].sort((a, b) => b.time_ms - a.time_ms);
  return {
    by: by === "pass" ? "op" : by,
    num_rows: rows.length,
    rows: top > 0 ? sorted.slice(0, top) : sorted,
    totals,
  };
}

function percent(x: number): string {
  return `${x.toFixed(1)}%`;
}

/** The profile as a table with a totals line. */
export function renderProfile(p: Profile, width: number | null): string {
  const right = "right" as const;
  const tail: Column[] = [
    ...(p.by === "op" ? [] : [{ header: "passes", align: right }]),
    { header: "time ms", align: right },
    ...(p.by === "module" ? [{ header: "self ms", align: right }] : []),
    { header: "time %", align: right },
    { header: "size", align: right },
    { header: "params", align: right },
    { header: "param size", align: right },
  ];
  const head: Column[] =
    p.by === "module"
      ? [{ header: "module", keep: true }, { header: "class" }, { header: "calls", align: right }]
      : [
          { header: p.by === "op" ? "pass" : "layer", keep: true },
          { header: "function" },
          { header: "module" },
        ];
  const numbers = (r: ProfileRow | ProfileTotals, pct: number, self?: number): Cell[] => [
    ...(p.by === "op" ? [] : [r.passes]),
    formatMs(r.time_ms, "cell"),
    ...(p.by === "module" ? [self === undefined ? "" : formatMs(self, "cell")] : []),
    percent(pct),
    formatBytes(r.nbytes),
    r.num_params,
    formatBytes(r.param_bytes),
  ];
  const rows = p.rows.map((r): Cell[] => [
    ...(p.by === "module"
      ? [moduleName(r.name), r.class, r.calls]
      : [r.name, r.func, r.module ?? ""]),
    ...numbers(r, r.time_pct, r.self_ms),
  ]);
  const footer: Cell[] = ["total", "", "", ...numbers(p.totals, p.totals.time_ms > 0 ? 100 : 0)];
  const table = renderTable([...head, ...tail], rows, { width, footer });
  const what = { op: "passes", layer: "layers", module: "modules" }[p.by];
  return p.rows.length < p.num_rows
    ? `${table}\n(the ${p.rows.length} slowest of ${p.num_rows} ${what}; --top 0 shows all)`
    : table;
}

function count(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError("not a whole number");
  return Number(value);
}

export function register(cli: Command): void {
  cli
    .command("profile")
    .description(
      "where the time and memory go: per pass, layer or module, slowest first, with totals",
    )
    .argument("<run>", "run directory made by torchlens extract")
    .option("--by <what>", "one row per pass, layer, or module: pass | layer | module", "pass")
    .option("--top <n>", "show the N slowest rows (0: all)", count, 20)
    .option("--json", "print the rows and totals as JSON", false)
    .action(async (run: string, o) => {
      const by = BY_ALIASES.get(o.by) ?? o.by;
      if (!["pass", "layer", "module"].includes(by))
        throw usageError(
          `--by ${JSON.stringify(o.by)} is not pass, layer or module`,
          "use --by pass (the default), --by layer or --by module",
        );
      const { log } = await readRun(run);
      const profile = profileRun(log, by as ProfileBy, o.top);
      await writeStdout(
        `${o.json ? JSON.stringify(profile, null, 2) : renderProfile(profile, terminalWidth())}\n`,
      );
    });
}
