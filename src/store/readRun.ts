/**
 * Opening an existing run for reading (ls, show, profile, graph, validate): checks that the
 * directory is a complete run of a schema this version reads, and loads its log. Nothing here
 * executes or unpickles anything.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { usageError } from "../errors.js";
import { LOG_SCHEMA, type RunLog } from "../log/types.js";
import { ACTIVATIONS, LOG, MANIFEST } from "./runDir.js";

export interface Manifest {
  tool: string;
  version: string;
  schema: string;
  status: "complete" | "partial";
  why?: string;
  model: { file: string; sha256: string; name: string | null; class: string };
  input: Record<string, unknown>;
  options: Record<string, unknown>;
  seed: number;
  [key: string]: unknown;
}

export interface Run {
  dir: string;
  manifest: Manifest;
  log: RunLog;
  /** Path of activations.npz. */
  npz: string;
}

async function readJson(file: string, what: string, dir: string): Promise<unknown> {
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch {
    throw usageError(
      `${dir} is not a torchlens run: it has no ${what}`,
      "give the directory that `torchlens extract -o` created",
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw usageError(
      `${path.join(dir, what)} is damaged: ${(err as Error).message}`,
      "re-run torchlens extract to make the run again",
    );
  }
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
  const manifest = (await readJson(path.join(dir, MANIFEST), MANIFEST, dir)) as Manifest;
  if (manifest?.tool !== "torchlens")
    throw usageError(
      `${dir}/${MANIFEST} was not written by torchlens`,
      "give the directory that `torchlens extract -o` created",
    );
  if (manifest.status !== "complete") {
    throw usageError(
      `${dir} is a partial run${manifest.why ? ` (${manifest.why})` : ""}`,
      "re-run torchlens extract to make a complete run",
    );
  }
  if (manifest.schema !== LOG_SCHEMA) {
    throw usageError(
      `${dir} has log schema ${manifest.schema}; this torchlens reads ${LOG_SCHEMA}`,
      "re-run the extract with this version of torchlens, or use the version that made the run",
    );
  }
  const log = (await readJson(path.join(dir, LOG), LOG, dir)) as RunLog;
  if (log?.schema !== LOG_SCHEMA || !Array.isArray(log.passes)) {
    throw usageError(
      `${dir}/${LOG} is not a ${LOG_SCHEMA} log`,
      "re-run torchlens extract to make the run again",
    );
  }
  return { dir, manifest, log, npz: path.join(dir, ACTIVATIONS) };
}
