/** What a dataset command is asked to do, and which of it makes the dataset what it is. */
import type { DatasetIdentity, DatasetOptionsRecord } from "./layout.js";
import type { Shard } from "./shards.js";

export interface DatasetOptions {
  modelFile: string;
  model?: string;
  /** A folder of images, a .txt list of paths, a .npy/.pt array; null when the model file's stimuli() gives them. */
  stimuli: string | null;
  out: string;
  layers: string[];
  batchSize: number;
  /** Worker processes decoding stimuli while the forward runs (0: in the agent itself). */
  workers: number;
  dtype: "float16" | "float32" | "float64" | null;
  flatten: boolean;
  pool: "mean" | null;
  preset: "imagenet" | "none" | null;
  size: number | null;
  seed: number;
  grad: boolean;
  device: string;
  python?: string;
  /** This task's shard; null: the whole set (or the Slurm array task's, from its environment). */
  shard: Shard | null;
  skipBad: boolean;
  /** --check K: re-extract K stimuli one at a time and compare their rows. */
  check: number;
}

export function optionsRecord(opts: DatasetOptions): DatasetOptionsRecord {
  return {
    layers: opts.layers,
    batch_size: opts.batchSize,
    dtype: opts.dtype,
    flatten: opts.flatten,
    pool: opts.pool,
    preset: opts.preset,
    size: opts.size,
    seed: opts.seed,
    grad: opts.grad,
  };
}

const FLAG: Record<keyof DatasetOptionsRecord, string> = {
  layers: "--layers",
  batch_size: "--batch-size",
  dtype: "--dtype",
  flatten: "--flatten",
  pool: "--pool",
  preset: "--preset",
  size: "--size",
  seed: "--seed",
  grad: "--grad",
};

/**
 * How `now` differs from the dataset `was` made: '' when it is the same dataset, else what
 * changed, in words a user can act on.
 */
export function identityChange(was: DatasetIdentity, now: DatasetIdentity): string {
  if (was.model.sha256 !== now.model.sha256)
    return `the model file differs from the one it was made with (sha256 ${was.model.sha256.slice(0, 12)}…, now ${now.model.sha256.slice(0, 12)}…)`;
  if (was.model.name !== now.model.name)
    return `it was made with --model ${was.model.name ?? "(none)"}, now ${now.model.name ?? "(none)"}`;
  if (was.stimuli.count !== now.stimuli.count)
    return `it was made from ${was.stimuli.count} stimuli, and there are ${now.stimuli.count} now`;
  if (was.stimuli.fingerprint !== now.stimuli.fingerprint)
    return "its stimuli changed since it was made (a file was replaced, renamed or touched)";
  for (const key of Object.keys(FLAG) as (keyof DatasetOptionsRecord)[]) {
    const a = JSON.stringify(was.options[key]);
    const b = JSON.stringify(now.options[key]);
    if (a !== b) return `it was made with ${FLAG[key]} ${a}, and this command gives ${b}`;
  }
  return "";
}
