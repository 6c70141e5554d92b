/**
 * The gradients part of validation (docs/gradients.md, "Validation"): gradients.npz checked entry
 * by entry (every recorded gradient present, its bytes matching their CRC), what the agent reports
 * (a verdict per pass whose gradient the run records, replayed from its children's gradients, and
 * the inputs' and parameters' gradients against a plain backward pass), and the report's section.
 */
import type { GradTarget, Pass, RunLog } from "../log/types.js";
import type { Run } from "../store/readRun.js";
import { type Entry, verifyEntries } from "../store/verify.js";

/** One pass's gradient verdict as the agent sends it in `done`. */
export interface AgentGradVerdict {
  id: number;
  func: string | null;
  /** What the run records: a saved gradient, or none (the target does not depend on the pass). */
  grad: "saved" | "none";
  status: "passed" | "failed" | "exempt";
  reason: string | null;
  max_abs_err: number | null;
  at: number | null;
}

/** One input's or parameter's gradient against a plain backward pass, as the agent sends it. */
export interface AgentGradGroundTruth {
  kind: "input" | "param";
  id: number | null;
  param: string | null;
  ok: boolean;
  reason: string | null;
  max_abs_err: number | null;
}

/** `done`'s `gradients`. */
export interface AgentGradients {
  verdicts: AgentGradVerdict[];
  counts: Record<string, number>;
  ground_truth: AgentGradGroundTruth[];
}

export interface GradVerdict extends Omit<AgentGradVerdict, "id"> {
  label: string;
}

export interface GradientsReport {
  ok: boolean;
  target: GradTarget;
  counts: { passed: number; failed: number; exempt: number; total: number };
  /** Gradients (pass labels, `param:{address}` keys) whose stored bytes fail their CRC. */
  corrupted: string[];
  ground_truth: (Omit<AgentGradGroundTruth, "id"> & { pass: string | null })[];
  largest_error: { pass: string; max_abs_err: number } | null;
  /** One per pass whose gradient the run records (saved or none), in pass order. */
  verdicts: GradVerdict[];
}

/** Every array gradients.npz must hold: the saved passes' gradients and the parameters'. */
function gradientKeys(log: RunLog): Entry[] {
  const keys: Entry[] = [];
  for (const p of log.passes) {
    const g = p.grad ?? null;
    if (g && g.status === "saved") keys.push({ key: g.array, label: p.label });
  }
  for (const q of log.gradients?.params ?? []) keys.push({ key: q.array, label: q.array });
  return keys;
}

/**
 * The gradients whose bytes fail their CRC (pass labels, parameter keys). A gradient missing from
 * gradients.npz, or the file itself, makes the run damaged (exit 2), as for activations.npz.
 */
export function verifyGradients(
  run: Run,
  onArray?: (checked: number, total: number) => void,
): Promise<string[]> {
  if (!run.gradsNpz) return Promise.resolve([]);
  return verifyEntries(
    run.gradsNpz,
    gradientKeys(run.log),
    { what: "saved gradients", fix: "re-run torchlens extract --grads" },
    onArray,
  );
}

const CRC_REASON =
  "its stored gradient's bytes fail their CRC: gradients.npz was altered or damaged after extract";

/** The report's gradients section, from what the agent sent (absent: it checked nothing). */
export function buildGradients(
  log: RunLog,
  target: GradTarget,
  agent: AgentGradients | undefined,
  corrupted: string[],
): GradientsReport {
  const byId = new Map<number, Pass>(log.passes.map((p) => [p.id, p]));
  const label = (id: number | null) => (id === null ? null : (byId.get(id)?.label ?? `#${id}`));
  const corruptSet = new Set(corrupted);
  const verdicts: GradVerdict[] = (agent?.verdicts ?? []).map(({ id, ...v }) => {
    const gv: GradVerdict = { label: label(id) as string, ...v };
    if (corruptSet.has(gv.label) && gv.status !== "failed") {
      gv.status = "failed";
      gv.reason = CRC_REASON;
    }
    return gv;
  });
  const groundTruth = (agent?.ground_truth ?? []).map(({ id, ...g }) => {
    const entry = { ...g, pass: label(id) };
    const key = g.kind === "param" && g.param !== null ? `param:${g.param}` : entry.pass;
    if (key !== null && corruptSet.has(key) && entry.ok)
      return { ...entry, ok: false, reason: CRC_REASON };
    return entry;
  });
  if (!agent)
    groundTruth.push({
      kind: "input",
      pass: null,
      param: null,
      ok: false,
      reason: "the agent did not check the gradients",
      max_abs_err: null,
    });
  const counts = { passed: 0, failed: 0, exempt: 0, total: verdicts.length };
  let largest: GradientsReport["largest_error"] = null;
  for (const v of verdicts) {
    counts[v.status] += 1;
    if (
      v.max_abs_err !== null &&
      v.max_abs_err > 0 &&
      (!largest || v.max_abs_err > largest.max_abs_err)
    )
      largest = { pass: v.label, max_abs_err: v.max_abs_err };
  }
  return {
    ok: counts.failed === 0 && groundTruth.every((g) => g.ok),
    target,
    counts,
    corrupted,
    ground_truth: groundTruth,
    largest_error: largest,
    verdicts,
  };
}

/** What the gradients are of, in words: `the sum of the outputs`, `output_1[0, 207]`. */
function targetWords(t: GradTarget): string {
  if (t.kind === "sum") return "the sum of the outputs";
  if (t.kind === "index") return `${t.output}[${t.index.join(", ")}]`;
  return `${t.function}(output, *inputs)`;
}

const errText = (err: number | null, at: number | null) =>
  err !== null
    ? ` (largest error ${err.toExponential(2)}${at !== null ? ` at flat index ${at}` : ""})`
    : at !== null
      ? ` (first at flat index ${at})`
      : "";

/** The gradients' lines of the short report: every failure, then a summary line. */
export function describeGradients(g: GradientsReport, limit = 50): string[] {
  const lines: string[] = [];
  const failures = g.verdicts.filter((v) => v.status === "failed");
  for (const v of failures.slice(0, limit))
    lines.push(
      `FAIL gradient of ${v.label}${v.func ? ` [${v.func}]` : ""}: ${v.reason}${errText(v.max_abs_err, v.at)}`,
    );
  if (failures.length > limit)
    lines.push(
      `… and ${failures.length - limit} more gradient failures (--json lists every verdict)`,
    );
  for (const t of g.ground_truth.filter((x) => !x.ok)) {
    const what = t.kind === "param" ? `parameter ${t.param ?? "?"}` : `input ${t.pass ?? "?"}`;
    lines.push(
      `FAIL gradient of ${what}: a plain backward pass disagrees: ${t.reason}${errText(t.max_abs_err, null)}`,
    );
  }
  const inputs = g.ground_truth.filter((t) => t.kind === "input").length;
  const params = g.ground_truth.filter((t) => t.kind === "param").length;
  const plainOk = g.ground_truth.every((t) => t.ok);
  const checked = [
    `${inputs} input${inputs === 1 ? "" : "s"}`,
    ...(params ? [`${params} parameter${params === 1 ? "" : "s"}`] : []),
  ].join(" and ");
  const largest = g.largest_error
    ? `; largest error ${g.largest_error.max_abs_err.toExponential(2)} (${g.largest_error.pass})`
    : "";
  lines.push(
    `gradients of ${targetWords(g.target)}: ${g.counts.passed} passed, ${g.counts.failed} failed, ${g.counts.exempt} exempt of ${g.counts.total} passes replayed from their children; ` +
      `${checked} ${plainOk ? "match" : "DIFFER from"} a plain backward pass${largest}`,
  );
  return lines;
}
