/**
 * The CLI's side of the agent's `dataset` request (python_agent/torchlens_agent/dataset/run.py):
 * the request that loads the model and lists the stimuli, then one method per message.
 */
import type { Agent } from "../agent/process.js";
import type { Frame } from "../agent/wire.js";
import { TorchlensError } from "../errors.js";
import type { RawRun } from "../log/types.js";
import { readDryRun } from "../store/recorder.js";
import type { DatasetOptions } from "./options.js";

export interface StimuliFrame {
  kind: string;
  n: number;
  fingerprint: string;
  describe: string;
  /** Module addresses in training mode (the first few) and how many there are. */
  training: string[];
  num_training: number;
}

export interface BatchFrame {
  index: number;
  start: number;
  stop: number;
  bad: [number, string, string][];
  forward_ms: number;
  wait_ms: number;
  write_ms: number;
}

/** What the agent is told of one layer's rows (a part of DatasetLayer). */
export interface LayerRequest {
  id: number;
  label: string;
  file: string;
  row_shape: number[];
  descr: string;
  pool: "mean" | null;
  flatten: boolean;
}

export interface CompareItem {
  npz: string;
  key: string;
  file: string;
  row: number;
  layer: LayerRequest;
}

export interface CompareResult {
  row: number;
  label: string;
  max_abs: number;
  scale: number;
  ok: boolean;
  rtol: number;
}

async function expect(agent: Agent, type: string): Promise<Record<string, unknown>> {
  const frame = await agent.next();
  if (frame.header.type === type) return frame.header;
  throw new TorchlensError(
    `the agent sent a ${frame.header.type} frame where a ${type} frame was due`,
    { hint: "this is a bug in torchlens; run again with --verbose and report it" },
  );
}

export class DatasetAgent {
  private constructor(
    readonly agent: Agent,
    /** The module tree, as the agent sent it after loading the model (a probe's log needs it). */
    private readonly model: Frame,
    readonly stimuli: StimuliFrame,
  ) {}

  /** Send the request and wait until the agent has loaded the model and listed the stimuli. */
  static async open(agent: Agent, opts: DatasetOptions, modelFile: string, idsOut: string | null) {
    agent.send({
      type: "dataset",
      model_file: modelFile,
      model_name: opts.model ?? null,
      input: { kind: "none" },
      seed: opts.seed,
      device: opts.device,
      grad: opts.grad,
      stimuli: { path: opts.stimuli, preset: opts.preset, size: opts.size },
      workers: opts.workers,
      skip_bad: opts.skipBad,
      ids_out: idsOut,
    });
    const model = await agent.next();
    if (model.header.type !== "model")
      throw new TorchlensError(
        `the agent sent a ${model.header.type} frame where the model was due`,
        {
          hint: "this is a bug in torchlens; run again with --verbose and report it",
        },
      );
    return new DatasetAgent(
      agent,
      model,
      (await expect(agent, "stimuli")) as unknown as StimuliFrame,
    );
  }

  /** Save rows [start, stop) of the stimuli, stacked, as a .pt file per item. */
  async writeInputs(items: { start: number; stop: number; path: string }[]) {
    this.agent.send({ type: "dataset_inputs", items });
    return (await expect(this.agent, "inputs")) as { bad: [number, string, string][] };
  }

  /** One forward of the first `stop` stimuli, read as extract reads a dry run. */
  async probe(stop: number): Promise<RawRun> {
    this.agent.send({ type: "dataset_probe", start: 0, stop });
    let first: Frame | null = this.model;
    const next = async (): Promise<Frame> => {
      if (first) {
        const f = first;
        first = null;
        return f;
      }
      return this.agent.next();
    };
    return (await readDryRun(next)).raw;
  }

  /** Run `batches`, calling `onBatch` as each one's rows are durable. */
  async run(
    dir: string,
    layers: LayerRequest[],
    graph: unknown,
    batches: [number, number, number][],
    onBatch: (b: BatchFrame) => Promise<void>,
  ): Promise<void> {
    this.agent.send({ type: "dataset_run", dir, layers, reference: graph, batches });
    for (;;) {
      const frame = await this.agent.next();
      if (frame.header.type === "ran") return;
      if (frame.header.type !== "batch")
        throw new TorchlensError(
          `the agent sent a ${frame.header.type} frame during a dataset run`,
          {
            hint: "this is a bug in torchlens; run again with --verbose and report it",
          },
        );
      await onBatch(frame.header as unknown as BatchFrame);
    }
  }

  async compare(items: CompareItem[]): Promise<CompareResult[]> {
    this.agent.send({ type: "dataset_compare", items });
    return ((await expect(this.agent, "compared")) as { results: CompareResult[] }).results;
  }
}
