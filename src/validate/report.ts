/**
 * The validation report: one verdict per pass (passed, failed with the largest error and where,
 * exempt with the rule), the ground-truth check of the outputs, the op accounting, and the
 * one-line summary; for a run with gradients, their section too (grads.ts). Exit 0 only when
 * everything passed.
 */
import type { Pass, RunLog } from "../log/types.js";
import {
  type AgentGradients,
  buildGradients,
  describeGradients,
  type GradientsReport,
} from "./grads.js";

export interface DependenceCheck {
  parent: number;
  position: string;
  status: "changed" | "unchanged" | "exempt";
  rule: string | null;
}

/** One pass's verdict as the agent sends it. */
export interface Verdict {
  id: number;
  func: string;
  status: "passed" | "failed" | "exempt";
  reason: string | null;
  max_abs_err: number | null;
  at: number | null;
  compared_with: "saved" | "live" | null;
  random: boolean;
  dependence: DependenceCheck[];
}

export interface GroundTruth {
  id: number | null;
  ok: boolean;
  reason: string | null;
  max_abs_err: number | null;
}

/** Whether the capture saw every tensor-making torch call (python_agent/.../completeness.py). */
export interface Completeness {
  /** false where the agent's torch has no TorchFunctionMode (then `ok` is true, `reason` says why). */
  checked: boolean;
  ok: boolean;
  reason?: string;
  /** Calls no wrapper saw: the function, the user's line that made it, how often. */
  unseen: { func: string; where: string; count: number }[];
  /** Tensor-making torch calls counted in the captured and in the plain forward pass. */
  captured_calls: number | null;
  plain_calls: number | null;
  /** Functions whose counts differ between the two passes. */
  differences: { func: string; captured: number; plain: number }[];
}

/** What an agent older than the completeness check reports: nothing checked. */
const NOT_CHECKED: Completeness = {
  checked: false,
  ok: true,
  reason: "the agent did not report it",
  unseen: [],
  captured_calls: null,
  plain_calls: null,
  differences: [],
};

export interface PassVerdict extends Omit<Verdict, "dependence"> {
  label: string;
  dependence: (Omit<DependenceCheck, "parent"> & { parent: string })[];
}

export interface ValidationReport {
  run: string;
  ok: boolean;
  counts: { passed: number; failed: number; exempt: number; total: number };
  /** Passes the agent never met (the forward pass made fewer). */
  missing: string[];
  /** Passes whose stored bytes fail their CRC (altered or damaged after extract). */
  corrupted: string[];
  ground_truth: (Omit<GroundTruth, "id"> & { pass: string | null })[];
  accounting: { ops_in_log: number; ops_dispatched: number; ok: boolean };
  completeness: Completeness;
  largest_error: { pass: string; max_abs_err: number } | null;
  exemptions: Record<string, number>;
  verdicts: PassVerdict[];
  /** Only for a run with gradients (docs/gradients.md, "Validation"). */
  gradients?: GradientsReport;
}

/** What the agent said about a run's gradients, and their CRC check (only for runs with gradients). */
export interface GradientsInput {
  agent: AgentGradients | undefined;
  corrupted: string[];
}

export function buildReport(
  run: string,
  log: RunLog,
  verdicts: Verdict[],
  ground: GroundTruth[],
  opsDispatched: number,
  corrupted: string[],
  completeness: Completeness = NOT_CHECKED,
  gradients?: GradientsInput,
): ValidationReport {
  const byId = new Map<number, Pass>(log.passes.map((p) => [p.id, p]));
  const label = (id: number | null) => (id === null ? null : (byId.get(id)?.label ?? `#${id}`));
  const corruptSet = new Set(corrupted);
  const seen = new Set<number>();
  const passVerdicts: PassVerdict[] = verdicts.map((v) => {
    seen.add(v.id);
    const l = label(v.id) as string;
    const pv: PassVerdict = {
      ...v,
      label: l,
      dependence: v.dependence.map((d) => ({ ...d, parent: label(d.parent) as string })),
    };
    if (corruptSet.has(l) && pv.status !== "failed") {
      pv.status = "failed";
      pv.reason = "its stored bytes fail their CRC: the array was altered or damaged after extract";
    }
    return pv;
  });
  const missing = log.passes.filter((p) => !seen.has(p.id)).map((p) => p.label);
  const counts = { passed: 0, failed: 0, exempt: 0, total: passVerdicts.length };
  const exemptions: Record<string, number> = {};
  let largest: ValidationReport["largest_error"] = null;
  for (const v of passVerdicts) {
    counts[v.status] += 1;
    for (const d of v.dependence) if (d.rule) exemptions[d.rule] = (exemptions[d.rule] ?? 0) + 1;
    if (
      v.max_abs_err !== null &&
      v.max_abs_err > 0 &&
      (!largest || v.max_abs_err > largest.max_abs_err)
    )
      largest = { pass: v.label, max_abs_err: v.max_abs_err };
  }
  const groundTruth = ground.map((g) => ({
    pass: label(g.id),
    ok: g.ok,
    reason: g.reason,
    max_abs_err: g.max_abs_err,
  }));
  const accounting = {
    ops_in_log: log.num_ops_dispatched,
    ops_dispatched: opsDispatched,
    ok: log.num_ops_dispatched === opsDispatched,
  };
  const grads = log.gradients
    ? buildGradients(log, log.gradients.target, gradients?.agent, gradients?.corrupted ?? [])
    : undefined;
  const ok =
    counts.failed === 0 &&
    missing.length === 0 &&
    groundTruth.every((g) => g.ok) &&
    accounting.ok &&
    completeness.ok &&
    (grads?.ok ?? true);
  const report: ValidationReport = {
    run,
    ok,
    counts,
    missing,
    corrupted,
    ground_truth: groundTruth,
    accounting,
    completeness,
    largest_error: largest,
    exemptions,
    verdicts: passVerdicts,
  };
  if (grads) report.gradients = grads;
  return report;
}

/** The short human report: a summary line and every failure, one line each. */
export function describeReport(r: ValidationReport, limit = 50): string {
  const lines: string[] = [];
  const failures = r.verdicts.filter((v) => v.status === "failed");
  for (const v of failures.slice(0, limit)) {
    const err =
      v.max_abs_err !== null
        ? ` (largest error ${v.max_abs_err.toExponential(2)}${v.at !== null ? ` at flat index ${v.at}` : ""})`
        : v.at !== null
          ? ` (first at flat index ${v.at})`
          : "";
    lines.push(`FAIL ${v.label} [${v.func}]: ${v.reason}${err}`);
  }
  if (failures.length > limit)
    lines.push(`… and ${failures.length - limit} more failures (--json lists every verdict)`);
  if (r.missing.length)
    lines.push(
      `FAIL the forward pass never made ${r.missing.length} passes of the run: ${r.missing.slice(0, 5).join(", ")}${r.missing.length > 5 ? ", …" : ""}`,
    );
  for (const g of r.ground_truth.filter((x) => !x.ok))
    lines.push(
      `FAIL output ${g.pass ?? "?"}: a plain forward pass gives a different value: ${g.reason}`,
    );
  if (!r.accounting.ok)
    lines.push(
      `FAIL accounting: the forward pass dispatched ${r.accounting.ops_dispatched} ops, the log records ${r.accounting.ops_in_log}`,
    );
  const c = r.completeness;
  for (const u of c.unseen)
    lines.push(
      `FAIL incomplete: ${u.func} was called ${u.count === 1 ? "once" : `${u.count} times`} at ${u.where} and torchlens did not record it (a function held where capture could not rebind it: call it by name, e.g. F.${u.func}(x))`,
    );
  if (c.checked && c.captured_calls !== c.plain_calls) {
    const diff = c.differences
      .slice(0, 5)
      .map((d) => `${d.func} ${d.captured} captured / ${d.plain} plain`)
      .join(", ");
    lines.push(
      `FAIL incomplete: the plain forward pass made ${c.plain_calls} tensor-making torch calls, the captured one ${c.captured_calls}${diff ? ` (${diff})` : ""}`,
    );
  }
  if (r.gradients) lines.push(...describeGradients(r.gradients, limit));
  const ex = Object.entries(r.exemptions)
    .map(([k, n]) => `${k} ${n}`)
    .join(", ");
  const largest = r.largest_error
    ? `; largest error ${r.largest_error.max_abs_err.toExponential(2)} (${r.largest_error.pass})`
    : "; every replay bit-exact";
  lines.push(
    `${r.ok ? "valid" : "INVALID"}: ${r.counts.passed} passed, ${r.counts.failed} failed, ${r.counts.exempt} exempt of ${r.counts.total} passes; ` +
      `outputs ${r.ground_truth.every((g) => g.ok) ? "match a plain forward pass" : "DIFFER from a plain forward pass"}; ` +
      `${r.accounting.ops_dispatched} ops dispatched${c.checked ? (c.ok ? `; all ${c.plain_calls} torch calls recorded` : "; calls MISSED") : ""}${largest}${ex ? `; dependence exemptions: ${ex}` : ""}`,
  );
  return lines.join("\n");
}
