/**
 * Extraction: run the model's forward pass in the agent and record it into a new run (agent
 * session → recorder → layer log → manifest → commit). A feature folder of its own, beside
 * validate/, because it drives agent/, log/ and store/ together and belongs to none of them;
 * cli/extract.ts only turns flags into ExtractOptions and prints the summary.
 */
import fs from "node:fs/promises";
import path from "node:path";
import type { Hello } from "../agent/process.js";
import { AgentSession } from "../agent/session.js";
import type { InputRequest } from "../agent/wire.js";
import { TorchlensError, usageError } from "../errors.js";
import { buildLog } from "../log/build.js";
import { type AgentSelection, planSelection, selectPasses, splitSelectors } from "../log/select.js";
import type { RawRun, RunLog } from "../log/types.js";
import { ACTIVATIONS, GRADIENTS, LOG, sha256File } from "../store/files.js";
import type { Manifest } from "../store/manifest.js";
import { type NextFrame, type Recorded, Recorder, readDryRun } from "../store/recorder.js";
import { formatBytes } from "../ui/format.js";
import { Progress } from "../ui/progress.js";
import { TOOL_VERSION } from "../version.js";
import type { GradRequest } from "./grads.js";
import { type InputFlags, type InputSpec, inputSpec } from "./input.js";

/** How to run a model: what extract and `validate model.py` share. */
export interface ModelOptions extends InputFlags {
  modelFile: string;
  model?: string;
  device: string;
  python?: string;
  allowPickle: boolean;
  /** --grad: the forward pass runs with autograd on; otherwise under torch.no_grad(). */
  grad: boolean;
}

export interface ExtractOptions extends ModelOptions {
  out: string;
  force: boolean;
  /** --layers: what to save (the log always lists every pass). */
  layers?: string[];
  /** --grads and its target (docs/gradients.md); null or absent: no backward pass. */
  grads?: GradRequest | null;
}

/** What extract tells people (stderr) and pipelines (--json on stdout). */
export interface ExtractSummary {
  run: string;
  model: string;
  passes: number;
  layers: number;
  saved: number;
  bytes: number;
  ops_dispatched: number;
  wall_ms: number;
  forward_ms: number;
  /** forward_ms plus the agent's wait, after it, for its last bytes to be written: every pass on disk. */
  saved_ms: number;
  /** The agent's CPU time over saved_ms, all its threads (torch's, its writer's): null from an older agent. */
  agent_cpu_ms: number | null;
  first_op_ms: number | null;
  /** Forwards run: 2 when --layers needed final labels (a dry run first). */
  forwards: 1 | 2;
  /** The old name of `forwards`, written beside it for one release (CHANGELOG.md). */
  forward_passes: 1 | 2;
  python: string;
  torch: string;
}

/** Called once the run is committed, while its status line still shows (extract --graph). */
export type AfterCommit = (log: RunLog, run: string, progress: Progress) => Promise<void>;

type Save = "all" | "none" | AgentSelection | { ids: number[] };

type Streamed = Recorded & { hello: Hello };

/**
 * What the saving forward saves: everything; or what the selectors pick, decided by the agent as it
 * runs where the selectors allow (docs/wire.md), else from the final labels of a dry run first.
 */
async function chooseSave(
  selectors: string[] | null,
  dryPass: () => Promise<RawRun>,
): Promise<{ save: Save; dry: RawRun | null }> {
  if (!selectors) return { save: "all", dry: null };
  const plan = planSelection(selectors);
  if ("agent" in plan) return { save: plan.agent, dry: null };
  const dry = await dryPass();
  const dryLog = buildLog(dry, () => false);
  const wanted = new Set(selectPasses(dryLog, selectors).labels);
  return { save: { ids: dryLog.passes.filter((p) => wanted.has(p.label)).map((p) => p.id) }, dry };
}

/** The dry run and the saving forward must be the same, op for op. */
function checkSameRun(dry: RawRun, real: RawRun): void {
  const n = Math.max(dry.ops.length, real.ops.length);
  for (let i = 0; i < n; i++) {
    const a = dry.ops[i];
    const b = real.ops[i];
    const same =
      a &&
      b &&
      a.func === b.func &&
      a.shape.join() === b.shape.join() &&
      a.dtype === b.dtype &&
      JSON.stringify(a.parents) === JSON.stringify(b.parents);
    if (!same) {
      const what =
        !a || !b
          ? `it made ${dry.ops.length} passes, then ${real.ops.length}`
          : `pass ${i + 1} was ${a.func}${JSON.stringify(a.shape)}, then ${b.func}${JSON.stringify(b.shape)}`;
      throw new TorchlensError(
        `the model is not deterministic: --layers ran the forward twice (a dry run, then the saving one) and the two differed (${what})`,
        {
          hint: "select by function name, module address or ordinal (decided in one pass), or make the forward pass deterministic (fixed seed, no data-dependent randomness)",
        },
      );
    }
  }
}

/** Every selector must match, and what the agent saved must be exactly what they select. */
function checkSaved(log: RunLog, selectors: string[]): void {
  const wanted = selectPasses(log, selectors).labels;
  const saved = log.passes.filter((p) => p.saved).map((p) => p.label);
  if (wanted.join() !== saved.join()) {
    throw new TorchlensError(
      `--layers selected ${wanted.length} passes but the agent saved ${saved.length}`,
      { hint: "this is a bug in torchlens; please report it with the --layers value" },
    );
  }
}

interface Made {
  opts: ExtractOptions;
  argv: string[];
  modelFile: string;
  input: InputSpec;
  selectors: string[] | null;
  hello: Hello;
  log: RunLog;
  summary: ExtractSummary;
}

async function manifestOf(m: Made): Promise<Manifest> {
  const { opts, hello, summary } = m;
  return {
    tool: "torchlens",
    version: TOOL_VERSION,
    protocol: hello.protocol,
    schema: m.log.schema,
    status: "complete",
    created: new Date().toISOString(),
    command: m.argv,
    agent: {
      python: hello.python,
      executable: hello.executable,
      torch: hello.torch,
      numpy: hello.numpy,
      platform: hello.platform,
      agent: hello.agent,
    },
    model: {
      file: m.modelFile,
      sha256: await sha256File(m.modelFile),
      name: opts.model ?? null,
      class: m.log.model.class,
    },
    input: m.input.manifest,
    options: {
      device: opts.device,
      seed: opts.seed,
      layers: m.selectors,
      grad: opts.grad,
      ...(opts.grads
        ? { grads: { target: opts.grads.target, params: opts.grads.request.params } }
        : {}),
    },
    seed: opts.seed,
    files: { log: LOG, activations: ACTIVATIONS, ...(opts.grads ? { gradients: GRADIENTS } : {}) },
    counts: {
      passes: summary.passes,
      layers: summary.layers,
      saved: summary.saved,
      bytes: summary.bytes,
      ops_dispatched: summary.ops_dispatched,
    },
    timings: {
      wall_ms: summary.wall_ms,
      forward_ms: summary.forward_ms,
      first_op_ms: summary.first_op_ms,
      forwards: summary.forwards,
      forward_passes: summary.forwards,
    },
  };
}

function summarize(
  log: RunLog,
  streamed: Streamed,
  run: { target: string; saved: number; forwards: 1 | 2; wallMs: number },
): ExtractSummary {
  return {
    run: run.target,
    model: log.model.class,
    passes: log.num_passes,
    layers: log.num_layers,
    saved: run.saved,
    bytes: streamed.bytes,
    ops_dispatched: streamed.raw.numOps,
    wall_ms: Math.round(run.wallMs),
    forward_ms: Math.round(streamed.raw.forwardMs * 10) / 10,
    saved_ms: Math.round((streamed.raw.forwardMs + (streamed.raw.drainMs ?? 0)) * 10) / 10,
    agent_cpu_ms:
      streamed.raw.cpuMs === undefined ? null : Math.round(streamed.raw.cpuMs * 10) / 10,
    first_op_ms: streamed.firstOpMs === null ? null : Math.round(streamed.firstOpMs),
    forwards: run.forwards,
    forward_passes: run.forwards,
    python: streamed.hello.executable,
    torch: streamed.hello.torch,
  };
}

/** Extract `opts.modelFile` into the run `opts.out`; `argv` is recorded as the run's command. */
export async function extract(
  opts: ExtractOptions,
  argv: string[],
  afterCommit?: AfterCommit,
): Promise<ExtractSummary> {
  const t0 = performance.now();
  const modelFile = path.resolve(opts.modelFile);
  if (!(await fs.stat(modelFile).catch(() => null))?.isFile()) {
    throw usageError(
      `model file not found: ${opts.modelFile}`,
      "give the path of a .py file that defines build_model() or model",
    );
  }
  const selectors = opts.layers?.length ? splitSelectors(opts.layers) : null;
  const grads = opts.grads ?? null;
  const recorder = await Recorder.create(opts.out, opts.force, grads !== null);
  const progress = new Progress();
  const onInterrupt = () => {
    recorder.discardNow();
    return "removed the unfinished run";
  };
  return AgentSession.open({ python: opts.python, progress, onInterrupt }, async (session) => {
    try {
      const input = await inputSpec(opts, (name) => recorder.file(name));
      progress.start("starting the Python agent");
      const onFrame = (passes: number, bytes: number) =>
        progress.update(`${passes} passes, ${formatBytes(bytes)} written`);
      // one agent process, one forward pass: send the extract, read until done
      const forward = (save: Save, read: (next: NextFrame) => Promise<Recorded>) =>
        session.withAgent(async (agent): Promise<Streamed> => {
          progress.update("loading the model", 0);
          const direct = save === "none" ? null : recorder.direct();
          agent.send(extractRequest(opts, modelFile, input.request, save, direct));
          return { ...(await read(() => agent.next())), hello: agent.hello };
        });
      const { save, dry } = await chooseSave(selectors, async () => {
        return (await forward("none", (next) => readDryRun(next, onFrame))).raw;
      });
      const streamed = await forward(save, (next) => recorder.record(next, onFrame));
      if (dry) checkSameRun(dry, streamed.raw);
      const log = recorder.log(streamed, grads?.target ?? null);
      if (selectors) checkSaved(log, selectors);
      await recorder.writeLog(log);
      const summary = summarize(log, streamed, {
        target: recorder.target,
        saved: recorder.saved,
        forwards: dry ? 2 : 1,
        wallMs: performance.now() - t0,
      });
      const made = { opts, argv, modelFile, input, selectors, hello: streamed.hello, log, summary };
      await recorder.writeManifest(await manifestOf(made));
      await recorder.commit();
      await afterCommit?.(log, recorder.target, progress);
      progress.stop();
      return summary;
    } catch (err) {
      progress.stop();
      await recorder.discard();
      throw err;
    }
  });
}

function extractRequest(
  opts: ExtractOptions,
  modelFile: string,
  input: InputRequest,
  save: Save,
  direct: { path: string; at: number } | null,
) {
  return {
    type: "extract",
    model_file: modelFile,
    model_name: opts.model ?? null,
    input,
    seed: opts.seed,
    device: opts.device,
    grad: opts.grad,
    save,
    direct,
    allow_pickle: opts.allowPickle,
    // the dry run (save "none") lifts the inputs too, so that it runs the same ops, but takes no backward
    grads: opts.grads?.request ?? null,
  };
}
