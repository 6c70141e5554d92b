/** Extract-then-validate through the real CLI, and what a valid, whole run promises: shared by the
 * end-to-end suites that run models (zoo, faithful, torch2). */
import { readFileSync } from "node:fs";
import path from "node:path";
import type { RunLog } from "../../src/log/types.js";
import type { ValidationReport } from "../../src/validate/report.js";
import { torchlens } from "./cli.js";

export interface Outcome {
  run: string;
  log: RunLog;
  manifest: { options: { grad?: boolean } & Record<string, unknown> };
  report: ValidationReport;
  /** validate's exit code and stderr (its report is on stdout, as JSON). */
  validateExit: number | undefined;
  validateStderr: string;
}

/** `extract MODEL -o RUN ...extra`, then `validate RUN --json`; throws with the CLI's words when
 * extract fails or validate gives no report (a failed validation is an outcome, not an error). */
export async function extractAndValidate(
  run: string,
  model: string,
  extra: string[] = [],
  env: Record<string, string> = {},
): Promise<Outcome> {
  const ex = await torchlens(["extract", model, "-o", run, "--force", ...extra], { env });
  if (ex.exitCode !== 0) throw new Error(`extract ${model} failed:\n${ex.stderr}`);
  const va = await torchlens(["validate", run, "--json"], { env });
  if (!va.stdout)
    throw new Error(`validate ${run} gave no report (exit ${va.exitCode}):\n${va.stderr}`);
  const read = (file: string) => JSON.parse(readFileSync(path.join(run, file), "utf8"));
  return {
    run,
    log: read("log.json"),
    manifest: read("manifest.json"),
    report: JSON.parse(va.stdout),
    validateExit: va.exitCode,
    validateStderr: va.stderr,
  };
}

/** Everything a passing validation promises, with the failing verdicts in the message. */
export function expectValid({ log, report, validateExit }: Outcome): void {
  const failed = report.verdicts
    .filter((v) => v.status === "failed")
    .map((v) => `${v.label} [${v.func}]: ${v.reason}`);
  expect(failed).toEqual([]);
  expect(report.ground_truth.filter((g) => !g.ok)).toEqual([]);
  expect(report.missing).toEqual([]);
  expect(report.accounting.ok).toBe(true);
  expect(report.completeness.unseen).toEqual([]);
  expect(report.completeness.differences).toEqual([]);
  expect(report.counts.total).toBe(log.num_passes);
  expect(report.ok).toBe(true);
  expect(validateExit).toBe(0);
}

/** The recorded graph is whole: every output is reached from an input, and no tensor made inside
 * the forward pass turns up as a `constant` source (the sign of a call torchlens did not see). */
export function expectConnected({ log }: Outcome): void {
  const constants = log.passes.filter((p) => p.kind === "constant").map((p) => p.label);
  expect(constants).toEqual([]);
  const unreached = log.passes.filter((p) => p.is_output && p.distance_from_input === null);
  expect(unreached.map((p) => p.label)).toEqual([]);
}
