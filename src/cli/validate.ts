/**
 * `torchlens validate RUN` — prove a run's saved activations right by replaying the forward pass
 * (src/validate, python_agent/torchlens_agent/replay.py). `torchlens validate model.py [input
 * flags]` extracts to a temporary run first. Exit 0 when everything passed, 1 when a check failed,
 * 2 when the run cannot be validated (damaged, another schema, the model file gone or changed).
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Agent } from "../agent/process.js";
import { choosePython } from "../agent/python.js";
import { EXIT, TorchlensError, usageError } from "../errors.js";
import { NpzReader } from "../store/npzRead.js";
import { type Run, readRun } from "../store/readRun.js";
import { sha256File } from "../store/runDir.js";
import { Progress } from "../ui/progress.js";
import { validationPlan } from "../validate/plan.js";
import {
  buildReport,
  type Completeness,
  type GroundTruth,
  type ValidationReport,
  type Verdict,
} from "../validate/report.js";
import { type ExtractOptions, extract } from "./extract.js";
import { onInterrupt } from "./interrupt.js";

export interface ValidateOptions {
  python?: string;
  allowChangedModel: boolean;
  checkDependence: boolean;
  verbose: boolean;
}

/** The model file and input a run was made from, checked to be the same ones. */
async function sources(
  run: Run,
  allowChanged: boolean,
): Promise<{ modelFile: string; input: Record<string, unknown> }> {
  const m = run.manifest;
  const modelFile = m.model.file;
  const stat = await fs.stat(modelFile).catch(() => null);
  if (!stat?.isFile())
    throw usageError(
      `the run's model file is gone: ${modelFile}`,
      "validate on the machine and checkout where the run was made",
    );
  const sha = await sha256File(modelFile);
  if (sha !== m.model.sha256 && !allowChanged) {
    throw usageError(
      `the model file changed since the run was made: ${modelFile} (sha256 ${sha.slice(0, 12)}…, the run has ${m.model.sha256.slice(0, 12)}…)`,
      "re-run extract with the current file, or pass --allow-changed-model to validate with it anyway",
    );
  }
  const spec = m.input as {
    kind: string;
    path?: string;
    in_run?: boolean;
    sha256?: string;
    shapes?: number[][];
    dtype?: string;
  };
  if (spec.kind === "file") {
    const file = spec.in_run ? path.join(run.dir, spec.path as string) : (spec.path as string);
    const ok = await fs.stat(file).catch(() => null);
    if (!ok)
      throw usageError(
        `the run's input file is gone: ${file}`,
        "validate where the run was made, or re-run extract",
      );
    if (spec.sha256 && (await sha256File(file)) !== spec.sha256)
      throw usageError(
        `the input file changed since the run was made: ${file}`,
        "re-run extract with the current input",
      );
    return { modelFile, input: { kind: "file", path: file } };
  }
  if (spec.kind === "shape")
    return { modelFile, input: { kind: "shape", shapes: spec.shapes, dtype: spec.dtype } };
  return { modelFile, input: { kind: "example" } };
}

/** Structural check of activations.npz (exit 2 when damaged) and the CRC of every entry. */
async function checkArrays(run: Run, progress: Progress): Promise<string[]> {
  const reader = await NpzReader.open(run.npz);
  try {
    const saved = run.log.passes.filter((p) => p.array);
    const absent = saved.filter((p) => !reader.has(p.array as string)).map((p) => p.array);
    if (absent.length) {
      throw usageError(
        `${run.npz} is damaged: ${absent.length} saved passes have no array (${absent.slice(0, 3).join(", ")}${absent.length > 3 ? ", …" : ""})`,
        "re-run torchlens extract",
      );
    }
    const corrupted: string[] = [];
    let i = 0;
    for (const p of saved) {
      progress.update(`checking stored arrays ${++i}/${saved.length}`);
      if (!(await reader.verify(p.array as string))) corrupted.push(p.label);
    }
    return corrupted;
  } finally {
    await reader.close();
  }
}

export async function validateRun(dir: string, opts: ValidateOptions): Promise<ValidationReport> {
  const run = await readRun(dir);
  const { modelFile, input } = await sources(run, opts.allowChangedModel);
  process.stderr.write(
    `validating ${path.relative(process.cwd(), run.dir) || "."}: running the model file ${modelFile}\n`,
  );
  const progress = new Progress();
  let agent: Agent | null = null;
  const unregister = onInterrupt(() => {
    agent?.kill();
    progress.stop();
  });
  try {
    progress.start("checking stored arrays");
    const corrupted = await checkArrays(run, progress);
    const plan = validationPlan(run.log);
    progress.update("starting the Python agent", 0);
    agent = await Agent.start({
      python: choosePython(opts.python),
      onStderr: (chunk) => progress.passThrough(chunk),
    });
    // runs made before the grad choice existed ran their forward pass with autograd on
    const options = run.manifest.options as { device?: string; grad?: boolean };
    agent.send({
      type: "validate",
      model_file: modelFile,
      model_name: run.manifest.model.name,
      input,
      seed: run.manifest.seed,
      device: options.device ?? "cpu",
      grad: options.grad ?? true,
      npz: path.resolve(run.npz),
      expected: plan.expected,
      outputs: plan.outputs,
      check_dependence: opts.checkDependence,
    });
    const verdicts: Verdict[] = [];
    for (;;) {
      const { header } = await agent.next();
      if (header.type === "verdict") {
        verdicts.push(header as unknown as Verdict);
        progress.update(`replayed ${verdicts.length}/${plan.expected.length} passes`);
      } else if (header.type === "done") {
        await agent.close();
        progress.stop();
        return buildReport(
          run.dir,
          run.log,
          verdicts,
          header.ground_truth as GroundTruth[],
          header.num_ops as number,
          corrupted,
          header.completeness as Completeness | undefined,
        );
      }
    }
  } catch (err) {
    progress.stop();
    agent?.kill();
    throw err;
  } finally {
    unregister();
  }
}

/** `validate model.py`: extract into a temporary run, validate it, remove it. */
export async function validateModel(
  extractOpts: Omit<ExtractOptions, "out" | "force" | "json" | "layers">,
  opts: ValidateOptions,
  argv: string[],
): Promise<ValidationReport> {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "torchlens-validate-"));
  const out = path.join(tmp, "run");
  try {
    await extract({ ...extractOpts, out, force: false, json: false }, argv);
    return await validateRun(out, opts);
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

export function exitCodeFor(report: ValidationReport): number {
  return report.ok ? EXIT.ok : EXIT.failed;
}

export { TorchlensError };
