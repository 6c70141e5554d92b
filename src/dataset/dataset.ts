/**
 * `torchlens dataset`: one model over a stimulus set into per-layer N × feature matrices. The
 * flow: open the agent (model loaded, stimuli listed) → prepare the output, or check that the one
 * there is this same dataset → run this task's batches not yet done, recording each as its rows
 * become durable → mark the manifest complete when every batch is → --check.
 */
import { existsSync, rmSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { AgentSession } from "../agent/session.js";
import { usageError } from "../errors.js";
import { numpyItemSize } from "../log/dtypes.js";
import { sha256File } from "../store/files.js";
import { formatBytes } from "../ui/format.js";
import { Progress } from "../ui/progress.js";
import { checkRows } from "./check.js";
import { type BatchFrame, DatasetAgent, type LayerRequest } from "./conversation.js";
import {
  addToRanges,
  type DatasetIdentity,
  type DatasetIndex,
  type DatasetLayer,
  doneBatches,
  MANIFEST,
  processAlive,
  progressFile,
  rangeCount,
  readIndex,
  readManifest,
  readProgress,
  requireIndex,
  type ShardProgress,
  STIMULI,
  withLock,
  writeJsonAtomic,
  writeJsonAtomicSync,
} from "./layout.js";
import { type DatasetOptions, identityChange, optionsRecord } from "./options.js";
import { checkOutput, makeStaging, prepare } from "./prepare.js";
import { batchAt, type Shard, shardBatches, slurmShard } from "./shards.js";

export interface DatasetSummary {
  dataset: string;
  model: string;
  stimuli: number;
  layers: number;
  shard: Shard;
  /** This task's batches: all of them, those it ran now, those done before. */
  batches: { shard: number; ran: number; skipped: number };
  rows: number;
  bytes: number;
  wall_ms: number;
  stimuli_per_s: number | null;
  complete: boolean;
  prepared: boolean;
  bad: number;
  check: { stimuli: number; layers: number; max_rel: number } | null;
}

export function layerRequest(layer: DatasetLayer): LayerRequest {
  return {
    id: layer.id,
    label: layer.label,
    file: layer.file,
    row_shape: layer.shape.slice(1),
    descr: layer.descr,
    pool: layer.pool,
    flatten: layer.flatten,
  };
}

function slurmIds(env: NodeJS.ProcessEnv): ShardProgress["slurm"] {
  if (!env.SLURM_JOB_ID) return null;
  return {
    job: env.SLURM_JOB_ID,
    array_job: env.SLURM_ARRAY_JOB_ID ?? null,
    task: env.SLURM_ARRAY_TASK_ID ?? null,
  };
}

/** This task's progress record: the one a previous attempt left, or a new one. */
async function startProgress(
  out: string,
  shard: Shard,
  range: { first: number; last: number },
  opts: DatasetOptions,
): Promise<ShardProgress> {
  const old = (await readProgress(out)).find((r) => r.file === progressFile(shard))?.progress;
  const host = os.hostname();
  if (
    old?.state === "running" &&
    old.host === host &&
    old.pid !== process.pid &&
    processAlive(old.pid)
  )
    throw usageError(
      `shard ${shard.k}/${shard.n} of ${out} is being run by process ${old.pid} on this host`,
      "wait for it to finish (torchlens dataset status shows it), or stop it first",
    );
  const now = new Date().toISOString();
  return {
    shard,
    batches: range,
    done: old?.done ?? [],
    bad: old?.bad ?? [],
    state: "running",
    error: null,
    host,
    pid: process.pid,
    slurm: slurmIds(process.env),
    device: opts.device,
    started: now,
    updated: now,
    timings: old?.timings ?? { forward_ms: 0, wait_ms: 0, write_ms: 0, wall_ms: 0 },
  };
}

/** Mark the manifest complete when every batch of the dataset is recorded done (under the lock:
 * tasks that finish at once must not write it from stale reads). */
async function finishIfComplete(out: string, index: DatasetIndex): Promise<boolean> {
  return withLock(out, async () => {
    const records = await readProgress(out);
    const done = doneBatches(records);
    const complete = done.size >= index.batches.count;
    const manifest = await readManifest(out);
    if (!manifest) return complete;
    const bad = records.flatMap((r) => r.progress.bad).sort((a, b) => a.row - b.row);
    await writeJsonAtomic(path.join(out, MANIFEST), {
      ...manifest,
      status: complete ? "complete" : "incomplete",
      updated: new Date().toISOString(),
      batches: { count: index.batches.count, done: done.size },
      bad,
    });
    return complete;
  });
}

function trainingWarning(agent: DatasetAgent): void {
  const { training, num_training } = agent.stimuli;
  if (!num_training) return;
  process.stderr.write(
    `torchlens: warning: ${num_training} module${num_training === 1 ? " is" : "s are"} in training mode (${training.join(", ")}${num_training > training.length ? ", …" : ""}): ` +
      "dropout and batch norm then make each row depend on the rest of its batch\n" +
      "fix: return model.eval() from build_model() in the model file\n",
  );
}

/** Run the dataset command; `argv` is recorded as the command of --check's extract runs. */
export async function runDataset(
  opts: DatasetOptions,
  argv: string[],
  /** run: this task's batches (then --check); prepare: only make the output; check: only --check, over every batch done. */
  mode: "run" | "prepare" | "check" = "run",
): Promise<DatasetSummary> {
  const t0 = performance.now();
  const out = path.resolve(opts.out);
  const modelFile = path.resolve(opts.modelFile);
  if (!(await fs.stat(modelFile).catch(() => null))?.isFile())
    throw usageError(
      `model file not found: ${opts.modelFile}`,
      "give the path of a .py file that defines build_model() or model",
    );
  if (!opts.layers.length)
    throw usageError(
      "torchlens dataset needs --layers: which passes to save for every stimulus",
      "give selectors as extract takes them, e.g. --layers layer1@out,fc (module outputs, functions or labels; torchlens extract + torchlens ls show them)",
    );
  const shard = opts.shard ?? slurmShard(process.env) ?? { k: 1, n: 1 };
  let index = await readIndex(out);
  if (!index) await checkOutput(out);
  const staging = index ? null : await makeStaging(out);
  const progress = new Progress();
  let record: ShardProgress | null = null;
  let recordFile = "";
  const onInterrupt = () => {
    const preparing = staging !== null && existsSync(staging);
    if (preparing) rmSync(staging, { recursive: true, force: true });
    if (record?.state !== "running")
      return preparing ? "removed the unfinished preparation" : undefined;
    record.state = "interrupted";
    record.updated = new Date().toISOString();
    writeJsonAtomicSync(recordFile, record);
    return `recorded shard ${shard.k}/${shard.n} as interrupted after ${rangeCount(record.done)} batches (the same command resumes it)`;
  };
  return AgentSession.open({ python: opts.python, progress, onInterrupt }, (session) =>
    session.withAgent(async (raw) => {
      progress.start("loading the model and listing the stimuli");
      const agent = await DatasetAgent.open(
        raw,
        opts,
        modelFile,
        staging ? path.join(staging, STIMULI) : null,
      );
      trainingWarning(agent);
      const identity: DatasetIdentity = {
        model: { sha256: await sha256File(modelFile), name: opts.model ?? null },
        stimuli: { count: agent.stimuli.n, fingerprint: agent.stimuli.fingerprint },
        options: optionsRecord(opts),
      };
      let prepared = false;
      if (!index && staging) {
        progress.update("preparing the output: the probe forward", 0);
        const made = await prepare(agent, staging, opts, identity, modelFile);
        index = made.index;
        prepared = made.ours;
      }
      const ds = index as DatasetIndex;
      const change = identityChange(ds.identity, identity);
      if (change)
        throw usageError(
          `${opts.out} holds another dataset: ${change}`,
          "write this one into another -o; to start over, remove that directory first (nothing in it is changed)",
        );
      const range = shardBatches(shard, ds.batches.count);
      /** `ran` batches of `rows` stimuli in `runMs` (the batches' own time, not the preparation's). */
      const summary = (
        ran: { batches: number; rows: number; ms: number },
        skipped: number,
        check: DatasetSummary["check"],
      ): DatasetSummary => ({
        dataset: out,
        model: ds.model.class,
        stimuli: ds.stimuli.count,
        layers: ds.layers.length,
        shard,
        batches: { shard: range.last - range.first, ran: ran.batches, skipped },
        rows: ran.rows,
        bytes: ds.layers.reduce(
          (n, l) =>
            n +
            l.shape.slice(1).reduce((a, b) => a * b, 1) * (numpyItemSize(l.descr) ?? 0) * ran.rows,
          0,
        ),
        wall_ms: Math.round(performance.now() - t0),
        stimuli_per_s: ran.batches ? Math.round((ran.rows / (ran.ms / 1000)) * 10) / 10 : null,
        complete: false,
        prepared,
        bad: 0,
        check,
      });
      const none = { batches: 0, rows: 0, ms: 0 };
      if (mode === "prepare")
        return { ...summary(none, 0, null), complete: await finishIfComplete(out, ds) };
      const records = await readProgress(out);
      const done = doneBatches(records);
      if (mode === "check") {
        const all = {
          done: [...done].sort((a, b) => a - b).map((i): [number, number] => [i, i + 1]),
          bad: records.flatMap((r) => r.progress.bad),
        };
        const check = await checkRows(agent, ds, out, all, opts, argv, progress);
        progress.stop();
        return { ...summary(none, 0, check), complete: done.size >= ds.batches.count };
      }
      const todo: [number, number, number][] = [];
      for (let i = range.first; i < range.last; i++) {
        if (done.has(i)) continue;
        const b = batchAt(i, ds.stimuli.count, ds.batches.size);
        todo.push([b.index, b.start, b.stop]);
      }
      recordFile = path.join(out, progressFile(shard));
      const rec = await startProgress(out, shard, range, opts);
      record = rec;
      await writeJsonAtomic(recordFile, rec);
      const runT0 = performance.now();
      let ranRows = 0;
      try {
        await agent.run(out, ds.layers.map(layerRequest), ds.graph, todo, async (b: BatchFrame) => {
          addToRanges(rec.done, b.index);
          for (const [row, id, message] of b.bad) rec.bad.push({ row, id, message });
          rec.timings.forward_ms += b.forward_ms;
          rec.timings.wait_ms += b.wait_ms;
          rec.timings.write_ms += b.write_ms;
          rec.timings.wall_ms = Math.round(performance.now() - runT0);
          rec.updated = new Date().toISOString();
          await writeJsonAtomic(recordFile, rec);
          ranRows += b.stop - b.start;
          const rate = ranRows / ((performance.now() - runT0) / 1000);
          progress.update(
            `batch ${rangeCount(rec.done)}/${range.last - range.first} of shard ${shard.k}/${shard.n} · ${rate.toFixed(1)} stimuli/s`,
          );
        });
        rec.state = "done";
      } catch (err) {
        rec.state = "failed";
        rec.error = (err as Error).message;
        throw err;
      } finally {
        rec.updated = new Date().toISOString();
        if (rec.state !== "running") await writeJsonAtomic(recordFile, rec);
      }
      const complete = await finishIfComplete(out, ds);
      const check =
        opts.check > 0 ? await checkRows(agent, ds, out, rec, opts, argv, progress) : null;
      progress.stop();
      return {
        ...summary(
          { batches: todo.length, rows: ranRows, ms: performance.now() - runT0 },
          range.last - range.first - todo.length,
          check,
        ),
        complete,
        bad: rec.bad.length,
      };
    }),
  );
}

/** What `validate` says of a dataset's check. */
export function describeCheck(s: DatasetSummary): string {
  const where = path.relative(process.cwd(), s.dataset) || ".";
  const c = s.check;
  const state = s.complete
    ? ""
    : " (the dataset is incomplete: only its done batches were checked)";
  return c
    ? `${where}: ${c.stimuli} stimuli × ${c.layers} layers re-extracted one at a time match their rows (largest difference ${c.max_rel.toExponential(1)} of scale)${state}`
    : `${where}: nothing to check`;
}

export function describeDataset(s: DatasetSummary): string {
  const where = path.relative(process.cwd(), s.dataset) || ".";
  const shard = s.shard.n > 1 ? ` (shard ${s.shard.k}/${s.shard.n})` : "";
  const ran = s.batches.ran
    ? `ran ${s.batches.ran} batch${s.batches.ran === 1 ? "" : "es"}${shard}: ${s.rows} stimuli × ${s.layers} layers (${formatBytes(s.bytes)}) at ${s.stimuli_per_s} stimuli/s`
    : `nothing to run${shard}: its ${s.batches.shard} batches were done before`;
  const skipped = s.batches.ran && s.batches.skipped ? `, ${s.batches.skipped} done before` : "";
  const state = s.complete
    ? "the dataset is complete"
    : `the dataset is incomplete (torchlens dataset status ${where})`;
  const bad = s.bad ? `; ${s.bad} unreadable stimuli recorded (their rows are NaN)` : "";
  const check = s.check
    ? `; check: ${s.check.stimuli} stimuli × ${s.check.layers} layers match extract (largest difference ${s.check.max_rel.toExponential(1)} of scale)`
    : "";
  return `${ran}${skipped} → ${where}; ${state}${bad}${check}`;
}

/**
 * `torchlens validate DIR` on a dataset: --check over every batch done, with the options the
 * dataset was made with (its index), on `device`.
 */
export async function validateDataset(
  dir: string,
  how: { k: number; python?: string; device: string },
  argv: string[],
): Promise<DatasetSummary> {
  const index = await requireIndex(dir);
  const o = index.options;
  const opts: DatasetOptions = {
    modelFile: index.model.file,
    model: index.model.name ?? undefined,
    stimuli: index.stimuli.path,
    out: dir,
    layers: o.layers,
    batchSize: o.batch_size,
    workers: 0,
    dtype: o.dtype as DatasetOptions["dtype"],
    flatten: o.flatten,
    pool: o.pool,
    preset: o.preset as DatasetOptions["preset"],
    size: o.size,
    seed: o.seed,
    grad: o.grad,
    device: how.device,
    python: how.python,
    shard: { k: 1, n: 1 },
    skipBad: true,
    check: how.k,
  };
  return runDataset(opts, argv, "check");
}
