/**
 * --check K: K stimuli picked at random (reproducibly, from --seed) among the rows this task
 * wrote, each re-extracted alone through the full `extract` path, its selected passes compared
 * with their rows after the same pooling, flattening and cast. The tolerance is documented in
 * docs/dataset.md and applied by the agent (dataset/run.py, `compare`).
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { TorchlensError } from "../errors.js";
import { extract } from "../extract/extract.js";
import type { RunLog } from "../log/types.js";
import { ACTIVATIONS, LOG, readJson } from "../store/files.js";
import type { Progress } from "../ui/progress.js";
import type { CompareItem, DatasetAgent } from "./conversation.js";
import type { DatasetSummary } from "./dataset.js";
import { layerRequest } from "./dataset.js";
import { type DatasetIndex, rangeItems, type ShardProgress, STIMULI } from "./layout.js";
import type { DatasetOptions } from "./options.js";
import { batchAt } from "./shards.js";

/** A small seeded generator (mulberry32): the same rows are checked for the same --seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** K distinct rows of the batches `done`, bad rows left out, in row order. */
export function pickRows(
  index: DatasetIndex,
  done: number[],
  bad: Set<number>,
  k: number,
  seed: number,
): number[] {
  const rows: number[] = [];
  for (const i of [...done].sort((a, b) => a - b)) {
    const b = batchAt(i, index.stimuli.count, index.batches.size);
    for (let r = b.start; r < b.stop; r++) if (!bad.has(r)) rows.push(r);
  }
  const next = random(seed);
  for (let i = rows.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [rows[i], rows[j]] = [rows[j], rows[i]];
  }
  return rows.slice(0, k).sort((a, b) => a - b);
}

export async function checkRows(
  agent: DatasetAgent,
  index: DatasetIndex,
  out: string,
  record: Pick<ShardProgress, "done" | "bad">,
  opts: DatasetOptions,
  argv: string[],
  progress: Progress,
): Promise<DatasetSummary["check"]> {
  const rows = pickRows(
    index,
    rangeItems(record.done),
    new Set(record.bad.map((b) => b.row)),
    opts.check,
    opts.seed,
  );
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "torchlens-check-"));
  const labels = index.layers.map((l) => l.label);
  const ids = (await fs.readFile(path.join(out, STIMULI), "utf8")).split("\n");
  const failures: string[] = [];
  let maxRel = 0;
  try {
    for (const [i, row] of rows.entries()) {
      progress.update(`check: stimulus ${i + 1} of ${rows.length} through extract`, 0);
      const input = path.join(tmp, `row-${row}.pt`);
      await agent.writeInputs([{ start: row, stop: row + 1, path: input }]);
      const run = path.join(tmp, `run-${row}`);
      await extract(
        {
          modelFile: index.model.file,
          model: opts.model,
          device: opts.device,
          seed: opts.seed,
          python: opts.python,
          grad: opts.grad,
          allowPickle: false,
          input,
          inputDtype: "float32",
          out: run,
          force: false,
          layers: labels,
        },
        argv,
      );
      const log = (await readJson(run, LOG)) as RunLog;
      const arrays = new Map(log.passes.map((p) => [p.label, p.array]));
      const items: CompareItem[] = index.layers.map((layer) => ({
        npz: path.join(run, ACTIVATIONS),
        key: arrays.get(layer.label) ?? layer.label,
        file: path.join(out, layer.file),
        row,
        layer: layerRequest(layer),
      }));
      for (const r of await agent.compare(items)) {
        maxRel = Math.max(maxRel, r.max_abs / r.scale);
        if (!r.ok)
          failures.push(
            `${r.label}, stimulus ${ids[row]} (row ${row}): differs by ${r.max_abs.toExponential(2)} (allowed ${(r.rtol * r.scale).toExponential(2)})`,
          );
      }
      await fs.rm(run, { recursive: true, force: true });
    }
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
  if (failures.length)
    throw new TorchlensError(
      `--check: ${failures.length} of ${rows.length * labels.length} rows differ from extract beyond the tolerance`,
      {
        details: failures.slice(0, 10),
        hint: "a model whose rows depend on the rest of the batch (training mode, batch statistics) cannot match; put the model in eval mode, or report it with the command",
      },
    );
  return { stimuli: rows.length, layers: labels.length, max_rel: maxRel };
}
