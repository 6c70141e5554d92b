/**
 * Making a dataset directory, once, before any shard writes a row: the probe (one forward of the
 * first two stimuli, read as extract reads a dry run, whose log labels the passes and whose graph
 * every batch must match), each selected pass's .npy at its full size, index.json and the
 * manifest. All of it is made in a sibling directory and renamed into place whole, so a dataset
 * either is prepared or is not there; when several shards prepare at once, the first rename wins
 * and the others use its index.
 */
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { usageError } from "../errors.js";
import { buildLog } from "../log/build.js";
import { NUMPY_AS_TORCH, numpyItemSize } from "../log/dtypes.js";
import { selectPasses } from "../log/select.js";
import type { Pass } from "../log/types.js";
import { fsError } from "../store/files.js";
import { npyHeader } from "../store/npz.js";
import { TOOL_VERSION } from "../version.js";
import type { DatasetAgent } from "./conversation.js";
import {
  DATASET_FORMAT,
  type DatasetIdentity,
  type DatasetIndex,
  type DatasetLayer,
  type DatasetManifest,
  INDEX,
  LAYERS_DIR,
  layerFile,
  MANIFEST,
  PROGRESS_DIR,
  readIndex,
  STIMULI,
  writeJsonAtomic,
} from "./layout.js";
import type { DatasetOptions } from "./options.js";
import { batchCount } from "./shards.js";

const PROBE_ROWS = 2;
const CAST: Record<string, string> = { float16: "<f2", float32: "<f4", float64: "<f8" };
/** What a pass's rows are stored as, from its torch dtype: numpy's own, bfloat16 (which numpy
 * lacks) as float32, as the agent converts it (dataset/rows.py). */
const TORCH_AS_NUMPY: Record<string, string> = {
  ...Object.fromEntries(Object.entries(NUMPY_AS_TORCH).map(([numpy, torch]) => [torch, numpy])),
  bfloat16: "<f4",
};

/** The output is free for a new dataset, or holds one already (then its index is read instead). */
export async function checkOutput(out: string): Promise<void> {
  const entries = await fs.readdir(out).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [] as string[];
    if (err.code === "ENOTDIR")
      throw usageError(
        `${out} exists and is not a directory`,
        "choose another output path with -o",
      );
    throw fsError(err, `reading ${out}`);
  });
  if (entries.length > 0)
    throw usageError(
      `${out} is a non-empty directory that is not a torchlens dataset (it has no ${INDEX})`,
      "choose another output path with -o; a dataset is made in a new or empty directory",
    );
}

/** A fresh directory beside `out` (the same file system, so the rename is atomic). */
export async function makeStaging(out: string): Promise<string> {
  const parent = path.dirname(out);
  await fs.mkdir(parent, { recursive: true }).catch((err) => {
    throw fsError(err, `creating ${parent}`);
  });
  const staging = path.join(
    parent,
    `.${path.basename(out)}.preparing-${randomBytes(4).toString("hex")}`,
  );
  await fs.mkdir(staging).catch((err) => {
    throw fsError(err, `creating ${staging}`);
  });
  return staging;
}

/** The rows of one selected pass of the probe, as --pool, --flatten and --dtype shape them. */
export function layerOf(
  p: Pass,
  probeRows: number,
  opts: DatasetOptions,
  rows: number,
): DatasetLayer {
  if (p.shape.length === 0 || p.shape[0] !== probeRows)
    throw usageError(
      `--layers selects ${p.label}, whose shape (${p.shape.join(", ")}) has no batch dimension: the probe's batch of ${probeRows} stimuli gave it`,
      "select passes whose first dimension is the batch (the output of a layer; not a model constant, nor a pass after a flatten of the whole batch)",
    );
  const passShape = p.shape.slice(1);
  let row = opts.pool === "mean" && passShape.length > 1 ? passShape.slice(0, 1) : passShape;
  if (opts.flatten) row = [row.reduce((a, b) => a * b, 1)];
  let descr = TORCH_AS_NUMPY[p.dtype] ?? "<f4";
  if (opts.dtype) descr = CAST[opts.dtype];
  else if (opts.pool === "mean" && passShape.length > 1 && !/^[<>|=]?[fc]/.test(descr))
    descr = "<f8";
  return {
    label: p.label,
    file: layerFile(p.label),
    id: p.id,
    shape: [rows, ...row],
    dtype: NUMPY_AS_TORCH[descr] ?? descr,
    descr,
    pass_shape: passShape,
    pass_dtype: p.dtype,
    pool: opts.pool === "mean" && passShape.length > 1 ? "mean" : null,
    flatten: opts.flatten,
    module: p.module,
    func: p.func,
  };
}

/** A .npy of the layer's full shape: its header, then zeros the file system need not store. */
async function allocate(dir: string, layer: DatasetLayer): Promise<void> {
  const header = npyHeader(layer.descr, layer.shape);
  const size =
    header.length + layer.shape.reduce((a, b) => a * b, 1) * (numpyItemSize(layer.descr) ?? 0);
  const file = path.join(dir, layer.file);
  try {
    const handle = await fs.open(file, "wx");
    try {
      await handle.write(header, 0, header.length, 0);
      await handle.truncate(size);
    } finally {
      await handle.close();
    }
  } catch (err) {
    throw fsError(err, `creating ${file}`);
  }
}

export interface Prepared {
  index: DatasetIndex;
  /** False when another task prepared the output first (this one's work was dropped). */
  ours: boolean;
}

/** Prepare the dataset in `staging` and rename it to `out`. */
export async function prepare(
  agent: DatasetAgent,
  staging: string,
  opts: DatasetOptions,
  identity: DatasetIdentity,
  modelFile: string,
): Promise<Prepared> {
  const n = agent.stimuli.n;
  // The probe runs the first PROBE_ROWS stimuli: enough to tell the batch dimension, few enough
  // that its forward costs little.
  const probeRows = Math.min(PROBE_ROWS, opts.batchSize, n);
  try {
    const raw = await agent.probe(probeRows);
    const log = buildLog(raw, () => false);
    const wanted = new Set(selectPasses(log, opts.layers).labels);
    const layers = log.passes
      .filter((p) => wanted.has(p.label))
      .map((p) => layerOf(p, probeRows, opts, n));
    // in the index's log, a selected pass is saved, in its layer's file (as extract's log names
    // its array in activations.npz)
    const files = new Map(layers.map((l) => [l.label, l.file]));
    for (const p of log.passes) {
      p.saved = files.has(p.label);
      p.array = files.get(p.label) ?? null;
    }
    const graph: DatasetIndex["graph"] = [...raw.ops]
      .sort((a, b) => a.id - b.id)
      .map((op) => [op.func, op.parents]);
    await fs.mkdir(path.join(staging, LAYERS_DIR));
    await fs.mkdir(path.join(staging, PROGRESS_DIR));
    for (const layer of layers) await allocate(staging, layer);
    const created = new Date().toISOString();
    const tool = { name: "torchlens" as const, version: TOOL_VERSION };
    const index: DatasetIndex = {
      format: DATASET_FORMAT,
      tool,
      created,
      key: identityKey(identity),
      identity,
      model: {
        file: modelFile,
        sha256: identity.model.sha256,
        name: opts.model ?? null,
        class: log.model.class,
      },
      stimuli: {
        path: opts.stimuli ? path.resolve(opts.stimuli) : null,
        kind: agent.stimuli.kind,
        count: n,
        fingerprint: agent.stimuli.fingerprint,
        describe: agent.stimuli.describe,
        ids: STIMULI,
      },
      options: identity.options,
      batches: { size: opts.batchSize, count: batchCount(n, opts.batchSize) },
      layers,
      graph,
      log,
    };
    const manifest: DatasetManifest = {
      format: DATASET_FORMAT,
      tool,
      status: "incomplete",
      key: index.key,
      created,
      updated: created,
      batches: { count: index.batches.count, done: 0 },
      bad: [],
    };
    await writeJsonAtomic(path.join(staging, INDEX), index);
    await writeJsonAtomic(path.join(staging, MANIFEST), manifest);
    return await commit(staging, opts.out, index);
  } catch (err) {
    await fs.rm(staging, { recursive: true, force: true });
    throw err;
  }
}

async function commit(staging: string, out: string, index: DatasetIndex): Promise<Prepared> {
  try {
    await fs.rename(staging, out);
    return { index, ours: true };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "ENOTEMPTY" && code !== "EEXIST")
      throw fsError(err, `renaming ${staging} to ${out}`);
  }
  // another task prepared it first: use theirs (identity is checked by the caller)
  await fs.rm(staging, { recursive: true, force: true });
  const theirs = await readIndex(out);
  if (!theirs) await checkOutput(out);
  return { index: theirs as DatasetIndex, ours: false };
}

export function identityKey(identity: DatasetIdentity): string {
  return createHash("sha256").update(JSON.stringify(identity)).digest("hex");
}
