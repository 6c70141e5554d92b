/**
 * `dataset status`: which shards and batches are done, from the progress records, with each
 * record's word checked against the world: a `running` task whose process is gone (this host) or
 * whose Slurm task left the queue was interrupted. Success is judged per shard, never from an
 * array job's exit code.
 */
import os from "node:os";
import path from "node:path";
import {
  doneBatches,
  processAlive,
  rangeItems,
  readManifest,
  readProgress,
  requireIndex,
  type ShardProgress,
} from "./layout.js";
import { formatRanges, shardBatches } from "./shards.js";
import { queued, readSubmissions } from "./slurm.js";

export interface ShardStatus {
  shard: string;
  batches: string;
  done: number;
  total: number;
  state: "done" | "running" | "failed" | "interrupted" | "pending" | "lost";
  why: string | null;
  host: string | null;
  job: string | null;
  updated: string | null;
  file: string | null;
}

export interface DatasetStatus {
  dataset: string;
  model: string;
  stimuli: number;
  layers: number;
  complete: boolean;
  batches: { count: number; done: number; todo: string };
  shards: ShardStatus[];
  bad: { row: number; id: string; message: string }[];
}

/** Batches [first, last) as people read them: "4-7", "4", or "none". */
function span(first: number, last: number): string {
  return last <= first ? "none" : last - first === 1 ? `${first}` : `${first}-${last - 1}`;
}

function jobOf(p: ShardProgress): string | null {
  if (!p.slurm) return null;
  return p.slurm.array_job && p.slurm.task ? `${p.slurm.array_job}_${p.slurm.task}` : p.slurm.job;
}

export async function datasetStatus(dir: string): Promise<DatasetStatus> {
  const out = path.resolve(dir);
  const index = await requireIndex(out);
  const records = await readProgress(out);
  const manifest = await readManifest(out);
  const queues = new Map<string, Map<string, string> | null>();
  const inQueue = async (job: string): Promise<string | null | undefined> => {
    const arrayJob = job.split("_")[0];
    if (!queues.has(arrayJob)) queues.set(arrayJob, await queued(arrayJob));
    const q = queues.get(arrayJob);
    return q === null ? undefined : (q?.get(job) ?? null); // undefined: cannot tell
  };
  const shards: ShardStatus[] = [];
  const seen = new Set<string>();
  for (const { file, progress: p } of records) {
    const total = p.batches.last - p.batches.first;
    const job = jobOf(p);
    let state: ShardStatus["state"] = p.state;
    let why: string | null = p.error;
    if (p.state === "running") {
      if (p.host === os.hostname() && !processAlive(p.pid)) {
        state = "interrupted";
        why = `process ${p.pid} is gone`;
      } else if (job && (await inQueue(job)) === null) {
        state = "interrupted";
        why = `Slurm task ${job} left the queue`;
      }
    }
    const key = `${p.shard.k}/${p.shard.n}`;
    seen.add(key);
    shards.push({
      shard: key,
      batches: span(p.batches.first, p.batches.last),
      done: rangeItems(p.done).filter((i) => i >= p.batches.first && i < p.batches.last).length,
      total,
      state,
      why,
      host: p.host,
      job,
      updated: p.updated,
      file,
    });
  }
  // submitted tasks that have not written a record yet
  for (const sub of await readSubmissions(out)) {
    for (const k of sub.tasks) {
      const key = `${k}/${sub.shards}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const job = `${sub.job}_${k}`;
      const queue = await inQueue(job);
      const { first, last } = shardBatches({ k, n: sub.shards }, index.batches.count);
      shards.push({
        shard: key,
        batches: span(first, last),
        done: 0,
        total: last - first,
        state: queue === null ? "lost" : "pending",
        why:
          queue === null ? "left the queue without starting" : queue ? queue.toLowerCase() : null,
        host: null,
        job,
        updated: sub.submitted,
        file: null,
      });
    }
  }
  shards.sort((a, b) => {
    const [ak, an] = a.shard.split("/").map(Number);
    const [bk, bn] = b.shard.split("/").map(Number);
    return an - bn || ak - bk;
  });
  const done = doneBatches(records);
  const todo: number[] = [];
  for (let i = 0; i < index.batches.count; i++) if (!done.has(i)) todo.push(i);
  return {
    dataset: out,
    model: index.model.class,
    stimuli: index.stimuli.count,
    layers: index.layers.length,
    complete: todo.length === 0 && manifest?.status === "complete",
    batches: {
      count: index.batches.count,
      done: index.batches.count - todo.length,
      todo: formatRanges(todo),
    },
    shards,
    bad: records.flatMap((r) => r.progress.bad).sort((a, b) => a.row - b.row),
  };
}
