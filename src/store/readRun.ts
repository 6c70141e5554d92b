/**
 * Opening an existing run for reading (ls, show, profile, graph, validate): checks that the
 * directory is a complete run of a schema this version reads, and loads its log; and, for
 * validate, finds the model file and input the run was made from, checked unchanged. Nothing here
 * executes or unpickles anything.
 */
import fs from "node:fs/promises";
import path from "node:path";
import type { InputRequest } from "../agent/wire.js";
import { usageError } from "../errors.js";
import { LOG_SCHEMA, READ_SCHEMAS, type RunLog } from "../log/types.js";
import { ACTIVATIONS, GRADIENTS, LOG, readJson, sha256File } from "./files.js";
import { type Manifest, readManifest } from "./manifest.js";

export interface Run {
  dir: string;
  manifest: Manifest;
  log: RunLog;
  /** Path of activations.npz. */
  npz: string;
  /** Path of gradients.npz; null for a run made without --grads. */
  gradsNpz: string | null;
}

export async function readRun(dir: string): Promise<Run> {
  const stat = await fs.stat(dir).catch(() => null);
  if (!stat?.isDirectory())
    throw usageError(
      `run directory not found: ${dir}`,
      "give the directory that `torchlens extract -o` created",
    );
  if (path.basename(dir).includes(".partial-")) {
    throw usageError(
      `${dir} is an unfinished run (its extract was interrupted)`,
      "re-run torchlens extract; unfinished runs are never read",
    );
  }
  const manifest = await readManifest(dir);
  if (manifest.status !== "complete") {
    throw usageError(
      `${dir} is a partial run${manifest.why ? ` (${manifest.why})` : ""}`,
      "re-run torchlens extract to make a complete run",
    );
  }
  if (!READ_SCHEMAS.includes(manifest.schema)) {
    throw usageError(
      `${dir} has log schema ${manifest.schema}; this torchlens reads ${READ_SCHEMAS.join(" and ")}`,
      "re-run the extract with this version of torchlens, or use the version that made the run",
    );
  }
  const log = (await readJson(dir, LOG)) as RunLog;
  if (!READ_SCHEMAS.includes(log?.schema) || !Array.isArray(log.passes)) {
    throw usageError(
      `${dir}/${LOG} is not a ${LOG_SCHEMA} log (nor an older one this torchlens reads)`,
      "re-run torchlens extract to make the run again",
    );
  }
  // a /1 log is a /2 log without gradients (its passes have no `grad`, it has no `gradients`)
  const gradsNpz = log.gradients ? path.join(dir, log.gradients.file || GRADIENTS) : null;
  return { dir, manifest, log, npz: path.join(dir, ACTIVATIONS), gradsNpz };
}

/** The model file and input a run was made from, as the agent is to be given them again. */
export interface RunSources {
  modelFile: string;
  input: InputRequest;
}

/**
 * The run's model file and input, checked to be the ones it was made from (their sha256): a
 * missing or changed file is an error (exit 2); `allowChangedModel` lets a changed model through.
 */
export async function runSources(run: Run, allowChangedModel: boolean): Promise<RunSources> {
  const { model, input } = run.manifest;
  const modelFile = model.file;
  const stat = await fs.stat(modelFile).catch(() => null);
  if (!stat?.isFile())
    throw usageError(
      `the run's model file is gone: ${modelFile}`,
      "validate on the machine and checkout where the run was made",
    );
  const sha = await sha256File(modelFile);
  if (sha !== model.sha256 && !allowChangedModel) {
    throw usageError(
      `the model file changed since the run was made: ${modelFile} (sha256 ${sha.slice(0, 12)}…, the run has ${model.sha256.slice(0, 12)}…)`,
      "re-run extract with the current file, or pass --allow-changed-model to validate with it anyway",
    );
  }
  if (input.kind === "file") {
    const file = input.in_run ? path.join(run.dir, input.path) : input.path;
    const ok = await fs.stat(file).catch(() => null);
    if (!ok)
      throw usageError(
        `the run's input file is gone: ${file}`,
        "validate where the run was made, or re-run extract",
      );
    if (input.sha256 && (await sha256File(file)) !== input.sha256)
      throw usageError(
        `the input file changed since the run was made: ${file}`,
        "re-run extract with the current input",
      );
    return { modelFile, input: { kind: "file", path: file } };
  }
  if (input.kind === "shape")
    return { modelFile, input: { kind: "shape", shapes: input.shapes, dtype: input.dtype } };
  return { modelFile, input: { kind: "example" } };
}
