/**
 * Batches and shards. Batches are global: batch i holds rows [i·B, min((i+1)·B, N)) whatever task
 * runs it, so a sharded dataset computes exactly the batches a single process does (the same
 * inputs side by side, the same seed) and its files are byte-identical. A shard is a contiguous
 * block of whole batches, so its rows are disjoint from every other shard's.
 */
import { usageError } from "../errors.js";

export interface Batch {
  index: number;
  start: number;
  stop: number;
}

export interface Shard {
  /** 1-based */
  k: number;
  n: number;
}

export function batchCount(rows: number, batchSize: number): number {
  return Math.ceil(rows / batchSize);
}

export function batchAt(index: number, rows: number, batchSize: number): Batch {
  return { index, start: index * batchSize, stop: Math.min((index + 1) * batchSize, rows) };
}

/** Shard k of n's batches: [first, last) of the global batch indices (empty when n exceeds the batches). */
export function shardBatches(shard: Shard, batches: number): { first: number; last: number } {
  return {
    first: Math.floor(((shard.k - 1) * batches) / shard.n),
    last: Math.floor((shard.k * batches) / shard.n),
  };
}

/** `--shard K/N`. */
export function parseShard(text: string): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!m)
    throw usageError(
      `--shard ${JSON.stringify(text)} is not K/N`,
      "give the shard as K/N with 1 <= K <= N, e.g. --shard 3/16",
    );
  return checkShard({ k: Number(m[1]), n: Number(m[2]) }, `--shard ${text}`);
}

function checkShard(shard: Shard, what: string): Shard {
  if (shard.n < 1 || shard.k < 1 || shard.k > shard.n)
    throw usageError(
      `${what}: shard ${shard.k} is outside 1..${shard.n}`,
      "give K/N with 1 <= K <= N (shards are numbered from 1), e.g. --shard 1/4 .. --shard 4/4",
    );
  return shard;
}

/**
 * The shard of a Slurm array task, when the process is one and no --shard was given: task ids
 * counted from the array's first (`--array=1-16` and `--array=0-15` both give shards 1..16 of 16).
 * A sparse array (`--array=3,7`) cannot tell its shard count: such jobs pass --shard, as the
 * script `dataset submit` writes does.
 */
export function slurmShard(env: NodeJS.ProcessEnv): Shard | null {
  const id = env.SLURM_ARRAY_TASK_ID;
  const count = env.SLURM_ARRAY_TASK_COUNT;
  if (id === undefined || count === undefined) return null;
  const min = Number(env.SLURM_ARRAY_TASK_MIN ?? 1);
  const max = Number(env.SLURM_ARRAY_TASK_MAX ?? Number(count) + min - 1);
  const n = Number(count);
  if (![Number(id), n, min, max].every(Number.isInteger) || max - min + 1 !== n)
    throw usageError(
      `this Slurm array task (SLURM_ARRAY_TASK_ID=${id} of ${count}, ids ${min}..${max}) cannot tell its shard: the array's ids are not one contiguous range`,
      "pass --shard K/N explicitly (the script that `torchlens dataset submit --slurm` writes does)",
    );
  return checkShard({ k: Number(id) - min + 1, n }, "SLURM_ARRAY_TASK_ID");
}

/** "3-5,8" for a sorted list of numbers. */
export function formatRanges(values: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < values.length; ) {
    let j = i;
    while (j + 1 < values.length && values[j + 1] === values[j] + 1) j++;
    out.push(i === j ? `${values[i]}` : `${values[i]}-${values[j]}`);
    i = j + 1;
  }
  return out.join(",");
}
