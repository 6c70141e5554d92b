/**
 * The validation flow: check the run's stored arrays (store/verify.ts) and sources
 * (store/readRun.ts), send the agent the replay plan (plan.ts), collect a verdict per pass, and
 * build the report (report.ts). `validateModel` extracts into a temporary run first.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { AgentSession } from "../agent/session.js";
import { type ExtractOptions, extract, type ModelOptions } from "../extract/extract.js";
import { readRun, runSources } from "../store/readRun.js";
import { verifyArrays } from "../store/verify.js";
import { Progress } from "../ui/progress.js";
import { type AgentGradients, verifyGradients } from "./grads.js";
import { validationPlan } from "./plan.js";
import {
  buildReport,
  type Completeness,
  type GroundTruth,
  type ValidationReport,
  type Verdict,
} from "./report.js";

export interface ValidateOptions {
  python?: string;
  allowChangedModel: boolean;
  checkDependence: boolean;
}

/** Validate the run in `dir`: every pass replayed from its saved parents, the outputs, the edges. */
export async function validateRun(dir: string, opts: ValidateOptions): Promise<ValidationReport> {
  const run = await readRun(dir);
  const { modelFile, input } = await runSources(run, opts.allowChangedModel);
  process.stderr.write(
    `validating ${path.relative(process.cwd(), run.dir) || "."}: running the model file ${modelFile}\n`,
  );
  const progress = new Progress();
  return AgentSession.open({ python: opts.python, progress }, async (session) => {
    try {
      progress.start("checking stored arrays");
      const corrupted = await verifyArrays(run, (i, n) =>
        progress.update(`checking stored arrays ${i}/${n}`),
      );
      const gradsCorrupted = await verifyGradients(run, (i, n) =>
        progress.update(`checking stored gradients ${i}/${n}`),
      );
      const plan = validationPlan(run.log);
      const { manifest } = run;
      const report = await session.withAgent(async (agent) => {
        agent.send({
          type: "validate",
          model_file: modelFile,
          model_name: manifest.model.name,
          input,
          seed: manifest.seed,
          device: manifest.options.device,
          // runs made before the grad choice existed ran their forward pass with autograd on
          grad: manifest.options.grad ?? true,
          npz: path.resolve(run.npz),
          expected: plan.expected,
          outputs: plan.outputs,
          check_dependence: opts.checkDependence,
          // a run with gradients has them checked too (docs/gradients.md, "Validation")
          ...(plan.gradients && run.gradsNpz
            ? { gradients: { ...plan.gradients, file: path.resolve(run.gradsNpz) } }
            : {}),
        });
        const verdicts: Verdict[] = [];
        for (;;) {
          const { header } = await agent.next();
          if (header.type === "verdict") {
            verdicts.push(header as unknown as Verdict);
            progress.update(`replayed ${verdicts.length}/${plan.expected.length} passes`);
          } else if (header.type === "done") {
            return buildReport(
              run.dir,
              run.log,
              verdicts,
              header.ground_truth as GroundTruth[],
              header.num_ops as number,
              corrupted,
              header.completeness as Completeness | undefined,
              run.log.gradients
                ? {
                    agent: header.gradients as AgentGradients | undefined,
                    corrupted: gradsCorrupted,
                  }
                : undefined,
            );
          }
        }
      });
      progress.stop();
      return report;
    } catch (err) {
      progress.stop();
      throw err;
    }
  });
}

/** `validate model.py`: extract into a temporary run, validate it, remove it. */
export async function validateModel(
  model: ModelOptions,
  opts: ValidateOptions,
  argv: string[],
): Promise<ValidationReport> {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "torchlens-validate-"));
  const out = path.join(tmp, "run");
  try {
    const extractOpts: ExtractOptions = { ...model, out, force: false };
    await extract(extractOpts, argv);
    return await validateRun(out, opts);
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}
