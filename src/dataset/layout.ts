/**
 * A dataset directory (docs/dataset.md): what each file holds, typed here once, and how each is
 * read and written. index.json is written once, before any shard starts, and fixes the layers'
 * files and shapes; each task records its completed batches in its own progress file, replaced
 * atomically (written aside, then renamed); manifest.json says `complete` only once every batch
 * of every shard is recorded.
 */
import { randomBytes } from "node:crypto";
import { renameSync, writeFileSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { usageError } from "../errors.js";
import type { RunLog } from "../log/types.js";
import { fsError } from "../store/files.js";
import type { Shard } from "./shards.js";

export const DATASET_FORMAT = "torchlens.dataset/1";
export const INDEX = "index.json";
export const MANIFEST = "manifest.json";
export const STIMULI = "stimuli.txt";
export const LAYERS_DIR = "layers";
export const PROGRESS_DIR = "progress";
export const SLURM_DIR = "slurm";

/** What makes two commands the same dataset: a rerun with another of these is refused. */
export interface DatasetIdentity {
  model: { sha256: string; name: string | null };
  stimuli: { count: number; fingerprint: string };
  options: DatasetOptionsRecord;
}

export interface DatasetOptionsRecord {
  layers: string[];
  batch_size: number;
  dtype: string | null;
  flatten: boolean;
  pool: "mean" | null;
  preset: string | null;
  size: number | null;
  seed: number;
  grad: boolean;
}

/** One selected pass: its rows in `file`, shape `shape` = [N, ...the row]. */
export interface DatasetLayer {
  label: string;
  file: string;
  /** The pass id in the probe's log (the agent saves by id). */
  id: number;
  shape: number[];
  /** numpy's name of the rows' dtype ("float32") and its .npy descr ("<f4"). */
  dtype: string;
  descr: string;
  /** The pass as extract records it: its shape without the batch dimension, its dtype. */
  pass_shape: number[];
  pass_dtype: string;
  pool: "mean" | null;
  flatten: boolean;
  module: string | null;
  func: string;
}

export interface DatasetIndex {
  format: string;
  tool: { name: "torchlens"; version: string };
  created: string;
  key: string;
  identity: DatasetIdentity;
  model: { file: string; sha256: string; name: string | null; class: string };
  stimuli: {
    path: string | null;
    kind: string;
    count: number;
    fingerprint: string;
    describe: string;
    ids: string;
  };
  options: DatasetOptionsRecord;
  batches: { size: number; count: number };
  layers: DatasetLayer[];
  /** Each pass of the probe's forward as [function, [[parent id, argument], ...]]: every batch's graph must match it. */
  graph: [string, [number, string][]][];
  /** The layer log of the probe's forward (the first two stimuli), as extract's log.json: labels mean what they mean there. */
  log: RunLog;
}

export type ShardState = "running" | "done" | "failed" | "interrupted";

/** One task's record: the batches it completed (global indices), written after their rows are durable. */
export interface ShardProgress {
  shard: Shard;
  /** Its batches: [first, last). */
  batches: { first: number; last: number };
  /** The batches it completed, as sorted [first, last) ranges (one range for a task run in order). */
  done: Ranges;
  /** Stimuli that could not be read (--skip-bad): their rows hold NaN. */
  bad: { row: number; id: string; message: string }[];
  state: ShardState;
  error: string | null;
  host: string;
  pid: number;
  slurm: { job: string; array_job: string | null; task: string | null } | null;
  device: string;
  started: string;
  updated: string;
  timings: { forward_ms: number; wait_ms: number; write_ms: number; wall_ms: number };
}

export interface DatasetManifest {
  format: string;
  tool: { name: "torchlens"; version: string };
  status: "incomplete" | "complete";
  key: string;
  created: string;
  updated: string;
  batches: { count: number; done: number };
  bad: { row: number; id: string; message: string }[];
}

/** Sorted, disjoint [first, last) ranges of batch indices: a record's size does not grow with N. */
export type Ranges = [number, number][];

/** Add `i` to `ranges` (in place), merging neighbours. */
export function addToRanges(ranges: Ranges, i: number): void {
  let k = 0;
  while (k < ranges.length && ranges[k][1] < i) k++;
  if (k < ranges.length && ranges[k][0] <= i && i < ranges[k][1]) return;
  if (k < ranges.length && ranges[k][1] === i) ranges[k][1] = i + 1;
  else if (k < ranges.length && ranges[k][0] === i + 1) ranges[k][0] = i;
  else ranges.splice(k, 0, [i, i + 1]);
  const next = ranges[k + 1];
  if (next && next[0] === ranges[k][1]) {
    ranges[k][1] = next[1];
    ranges.splice(k + 1, 1);
  }
}

export function rangeItems(ranges: Ranges): number[] {
  return ranges.flatMap(([a, b]) => Array.from({ length: b - a }, (_, j) => a + j));
}

export function rangeCount(ranges: Ranges): number {
  return ranges.reduce((n, [a, b]) => n + b - a, 0);
}

/** The file name of a pass's rows: `linear_1_2:3` → layers/linear_1_2-3.npy. */
export function layerFile(label: string): string {
  return `${LAYERS_DIR}/${label.replace(/:/g, "-")}.npy`;
}

export function progressFile(shard: Shard): string {
  const w = Math.max(4, String(shard.n).length);
  return `${PROGRESS_DIR}/shard-${String(shard.k).padStart(w, "0")}-of-${String(shard.n).padStart(w, "0")}.json`;
}

function tmpName(file: string): string {
  return path.join(
    path.dirname(file),
    `.${path.basename(file)}.${randomBytes(4).toString("hex")}.tmp`,
  );
}

/** Replace `file` with `value` as JSON, atomically: a reader sees the old file or the new, never half. */
export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  const tmp = tmpName(file);
  try {
    const handle = await fs.open(tmp, "w");
    try {
      await handle.writeFile(`${JSON.stringify(value, null, 1)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw fsError(err, `writing ${file}`);
  }
}

/** The same, synchronously: for the last record written on Ctrl-C or SIGTERM. */
export function writeJsonAtomicSync(file: string, value: unknown): void {
  const tmp = tmpName(file);
  writeFileSync(tmp, `${JSON.stringify(value, null, 1)}\n`);
  renameSync(tmp, file);
}

async function readJsonFile<T>(file: string, what: string): Promise<T | null> {
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw fsError(err, `reading ${file}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw usageError(
      `${file} is damaged: ${(err as Error).message}`,
      `the dataset's ${what} cannot be read; make the dataset again in a new -o`,
    );
  }
}

/** The dataset's index, or null when `dir` holds none. */
export async function readIndex(dir: string): Promise<DatasetIndex | null> {
  const index = await readJsonFile<DatasetIndex>(path.join(dir, INDEX), "index");
  if (index && index.format !== DATASET_FORMAT)
    throw usageError(
      `${path.join(dir, INDEX)} is not a torchlens dataset index (format ${JSON.stringify(index.format)})`,
      "give the directory that `torchlens dataset -o` created",
    );
  return index;
}

/** `dir` is a dataset directory (it has an index.json). */
export async function isDataset(dir: string): Promise<boolean> {
  return (await fs.stat(path.join(dir, INDEX)).catch(() => null))?.isFile() ?? false;
}

/** The index of the dataset `dir`; a directory without one is a usage error. */
export async function requireIndex(dir: string): Promise<DatasetIndex> {
  const index = await readIndex(dir);
  if (!index)
    throw usageError(
      `${dir} is not a torchlens dataset: it has no ${INDEX}`,
      "give the directory that `torchlens dataset -o` created",
    );
  return index;
}

export async function readManifest(dir: string): Promise<DatasetManifest | null> {
  return readJsonFile<DatasetManifest>(path.join(dir, MANIFEST), "manifest");
}

/** Every task's progress record, in shard order. */
export async function readProgress(
  dir: string,
): Promise<{ file: string; progress: ShardProgress }[]> {
  const folder = path.join(dir, PROGRESS_DIR);
  const names = (await fs.readdir(folder).catch(() => [] as string[]))
    .filter((n) => n.endsWith(".json") && !n.startsWith("."))
    .sort();
  const out: { file: string; progress: ShardProgress }[] = [];
  for (const name of names) {
    const progress = await readJsonFile<ShardProgress>(path.join(folder, name), "progress record");
    if (progress) out.push({ file: `${PROGRESS_DIR}/${name}`, progress });
  }
  return out;
}

/**
 * Run `fn` holding the dataset's lock (a directory made atomically), so that tasks finishing at
 * once do not write manifest.json from stale reads. A lock older than `staleMs` was left by a
 * task that died holding it, and is broken.
 */
export async function withLock<T>(dir: string, fn: () => Promise<T>, staleMs = 30_000): Promise<T> {
  const lock = path.join(dir, ".lock");
  for (let wait = 10; ; wait = Math.min(wait * 2, 200)) {
    try {
      await fs.mkdir(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw fsError(err, `locking ${dir}`);
      const age = await fs.stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > staleMs) await fs.rm(lock, { recursive: true, force: true });
      else await new Promise((r) => setTimeout(r, wait));
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rm(lock, { recursive: true, force: true });
  }
}

/** Whether process `pid` still runs on this host (a task's record names it). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The batches some task recorded complete. */
export function doneBatches(records: { progress: ShardProgress }[]): Set<number> {
  return new Set(records.flatMap((r) => rangeItems(r.progress.done)));
}
