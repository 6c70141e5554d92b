/**
 * `torchlens extract`: spawn the agent, stream its records and bytes into a new run directory,
 * build the layer log, and move the run into place when it is complete.
 */
import { createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { Agent, type Hello } from "../agent/process.js";
import { choosePython } from "../agent/python.js";
import { TorchlensError, usageError } from "../errors.js";
import { buildLog } from "../log/build.js";
import { type AgentSelection, planSelection, selectPasses, splitSelectors } from "../log/select.js";
import type {
  ModelRecord,
  ModuleCallRecord,
  OpRecord,
  OutputStructure,
  RawRun,
  RunLog,
} from "../log/types.js";
import { type NpzEntry, NpzWriter } from "../store/npz.js";
import { ACTIVATIONS, fsError, LOG, MANIFEST, RunDir, sha256File } from "../store/runDir.js";
import { formatBytes, formatMs, Progress } from "../ui/progress.js";
import { writeGraph } from "./graph.js";
import { onInterrupt } from "./interrupt.js";

export interface ExtractOptions {
  modelFile: string;
  out: string;
  input?: string;
  inputShape?: string[];
  inputDtype: string;
  model?: string;
  device: string;
  seed: number;
  force: boolean;
  python?: string;
  allowPickle: boolean;
  /** --grad: the forward pass runs with autograd on; otherwise under torch.no_grad(). */
  grad: boolean;
  /** --graph: also draw the rolled graph into RUN/graph.svg. */
  graph?: boolean;
  /** --layers: what to save (the log always lists every pass). */
  layers?: string[];
  json: boolean;
  verbose: boolean;
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
  first_op_ms: number | null;
  /** Forward passes run: 2 when --layers needed final labels (a dry pass first). */
  forward_passes: number;
  python: string;
  torch: string;
}

/** Input shapes: "1,3,224,224" per input; several inputs as repeated flags or joined by ";". */
export function parseShapes(specs: string[]): number[][] {
  return specs
    .flatMap((s) => s.split(";"))
    .map((spec) => {
      const dims = spec
        .trim()
        .split(/[,x ]+/)
        .filter(Boolean);
      if (!dims.length || dims.some((d) => !/^\d+$/.test(d))) {
        throw usageError(
          `--input-shape ${JSON.stringify(spec)} is not a shape`,
          "give sizes separated by commas, e.g. --input-shape 1,3,224,224 (repeat the flag for several inputs)",
        );
      }
      return dims.map(Number);
    });
}

const NPY_MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);

/** Copy stdin into the run (so the run keeps the exact input it was made from). */
async function saveStdin(run: RunDir): Promise<string> {
  if (process.stdin.isTTY)
    throw usageError(
      "--input - reads the input from stdin, but stdin is a terminal",
      "pipe a .pt or .npy file in: torchlens extract model.py --input - < x.pt",
    );
  const tmp = run.file("input.tmp");
  await pipeline(process.stdin, createWriteStream(tmp));
  const handle = await fs.open(tmp, "r");
  const head = Buffer.alloc(6);
  await handle.read(head, 0, 6, 0);
  await handle.close();
  const name = head.equals(NPY_MAGIC) ? "input.npy" : "input.pt";
  await fs.rename(tmp, run.file(name));
  return name;
}

interface InputSpec {
  request: Record<string, unknown>;
  manifest: Record<string, unknown>;
}

async function inputSpec(opts: ExtractOptions, run: RunDir): Promise<InputSpec> {
  if (opts.input && opts.inputShape?.length)
    throw usageError("--input and --input-shape were both given", "use one of them");
  if (opts.input === "-") {
    const name = await saveStdin(run);
    return {
      request: { kind: "file", path: run.file(name) },
      manifest: {
        kind: "file",
        source: "stdin",
        path: name,
        in_run: true,
        sha256: await sha256File(run.file(name)),
      },
    };
  }
  if (opts.input) {
    const abs = path.resolve(opts.input);
    const stat = await fs.stat(abs).catch(() => null);
    if (!stat?.isFile())
      throw usageError(
        `input file not found: ${opts.input}`,
        "check the path given to --input (a .pt or .npy file, or - for stdin)",
      );
    return {
      request: { kind: "file", path: abs },
      manifest: { kind: "file", path: abs, in_run: false, sha256: await sha256File(abs) },
    };
  }
  if (opts.inputShape?.length) {
    const shapes = parseShapes(opts.inputShape);
    return {
      request: { kind: "shape", shapes, dtype: opts.inputDtype },
      manifest: { kind: "shape", shapes, dtype: opts.inputDtype, seed: opts.seed },
    };
  }
  return { request: { kind: "example" }, manifest: { kind: "example" } };
}

/** Read the agent's frames until `done`, writing each saved pass into the npz as its bytes arrive. */
async function streamRun(
  agent: Agent,
  npz: NpzWriter | null,
  entries: Map<number, NpzEntry>,
  progress: Progress,
) {
  let model: ModelRecord | null = null;
  const ops: OpRecord[] = [];
  const moduleCalls: ModuleCallRecord[] = [];
  let current: { entry: NpzEntry; id: number; remaining: number } | null = null;
  let bytes = 0;
  let firstOpMs: number | null = null;
  for (;;) {
    const { header, payload } = await agent.next();
    switch (header.type) {
      case "model":
        model = header as unknown as ModelRecord;
        break;
      case "op": {
        const op = header as unknown as OpRecord;
        if (current)
          throw new TorchlensError(
            `the agent sent pass ${op.id} before finishing the bytes of pass ${current.id}`,
          );
        // from the CLI process's start (performance's time origin), which the agent's early start gains on
        if (firstOpMs === null && op.kind !== "input") firstOpMs = performance.now();
        ops.push(op);
        if (op.stored_dtype !== null) {
          if (!npz)
            throw new TorchlensError(
              `the agent sent bytes for pass ${op.id} during a pass that saves nothing`,
            );
          const entry = npz.beginEntry(`p${op.id}`, op.stored_dtype, op.shape, op.nbytes);
          entries.set(op.id, entry);
          if (op.nbytes === 0) await npz.endEntry(entry);
          else current = { entry, id: op.id, remaining: op.nbytes };
        }
        progress.update(`${ops.length} passes, ${formatBytes(bytes)} written`);
        break;
      }
      case "data": {
        if (!current || header.id !== current.id)
          throw new TorchlensError(
            `the agent sent bytes for pass ${String(header.id)} out of order`,
          );
        for (const piece of payload) {
          await (npz as NpzWriter).write(current.entry, piece);
          current.remaining -= piece.length;
          bytes += piece.length;
        }
        if (current.remaining === 0) {
          await (npz as NpzWriter).endEntry(current.entry);
          current = null;
        }
        progress.update(`${ops.length} passes, ${formatBytes(bytes)} written`);
        break;
      }
      case "module":
        moduleCalls.push(header as unknown as ModuleCallRecord);
        break;
      case "done": {
        if (!model) throw new TorchlensError("the agent finished without describing the model");
        const raw: RawRun = {
          model,
          ops,
          moduleCalls,
          outputs: header.outputs as OutputStructure,
          numOps: header.num_ops as number,
          numCalls: header.num_calls as number,
          forwardMs: header.forward_ms as number,
        };
        return { raw, bytes, firstOpMs };
      }
      default:
        // frames from a newer agent that this CLI does not know are skipped
        break;
    }
  }
}

type Save = "all" | "none" | AgentSelection | { ids: number[] };

interface Streamed {
  raw: RawRun;
  bytes: number;
  firstOpMs: number | null;
  hello: Hello;
}

/** One agent process, one forward pass: start it, send the extract, stream until done, let it go. */
async function runAgent(
  opts: ExtractOptions,
  modelFile: string,
  input: InputSpec,
  save: Save,
  sink: { npz: NpzWriter; entries: Map<number, NpzEntry> } | null,
  progress: Progress,
  track: (agent: Agent) => void,
): Promise<Streamed> {
  progress.update("starting the Python agent", 0);
  const agent = await Agent.start({
    python: choosePython(opts.python),
    onStderr: (chunk) => progress.passThrough(chunk),
  });
  track(agent);
  progress.update("loading the model", 0);
  agent.send({
    type: "extract",
    model_file: modelFile,
    model_name: opts.model ?? null,
    input: input.request,
    seed: opts.seed,
    device: opts.device,
    grad: opts.grad,
    save,
    allow_pickle: opts.allowPickle,
  });
  // a dry pass writes nothing: an npz that no frame reaches
  const target = sink ?? { npz: null, entries: new Map<number, NpzEntry>() };
  let streamed: Awaited<ReturnType<typeof streamRun>>;
  try {
    streamed = await streamRun(agent, target.npz, target.entries, progress);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code) throw fsError(err, `writing ${ACTIVATIONS}`);
    throw err;
  }
  await agent.close();
  return { ...streamed, hello: agent.hello };
}

/** The dry pass and the saving pass must be the same forward pass, op for op. */
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
        `the model is not deterministic: --layers needed two forward passes and they differed (${what})`,
        {
          hint: "select by function name, module address or ordinal (decided in one pass), or make the forward pass deterministic (fixed seed, no data-dependent randomness)",
        },
      );
    }
  }
}

export async function extract(opts: ExtractOptions, argv: string[]): Promise<ExtractSummary> {
  const t0 = performance.now();
  const modelFile = path.resolve(opts.modelFile);
  if (!(await fs.stat(modelFile).catch(() => null))?.isFile()) {
    throw usageError(
      `model file not found: ${opts.modelFile}`,
      "give the path of a .py file that defines build_model() or model",
    );
  }
  const selectors = opts.layers?.length ? splitSelectors(opts.layers) : null;
  const run = await RunDir.create(opts.out, opts.force);
  const progress = new Progress();
  let agent: Agent | null = null;
  let npz: NpzWriter | null = null;
  const unregister = onInterrupt(() => {
    agent?.kill();
    progress.stop();
    run.discard();
  });
  try {
    const input = await inputSpec(opts, run);
    progress.start("starting the Python agent");
    const track = (a: Agent) => {
      agent = a;
    };
    let save: Save = "all";
    let dry: RawRun | null = null;
    if (selectors) {
      const plan = planSelection(selectors);
      if ("agent" in plan) save = plan.agent;
      else {
        dry = (await runAgent(opts, modelFile, input, "none", null, progress, track)).raw;
        const dryLog = buildLog(dry, () => false);
        const wanted = new Set(selectPasses(dryLog, selectors).labels);
        save = { ids: dryLog.passes.filter((p) => wanted.has(p.label)).map((p) => p.id) };
      }
    }
    try {
      npz = await NpzWriter.create(run.file(ACTIVATIONS), { immutablePieces: true });
    } catch (err) {
      throw fsError(err, `creating ${ACTIVATIONS}`);
    }
    const entries = new Map<number, NpzEntry>();
    const streamed = await runAgent(
      opts,
      modelFile,
      input,
      save,
      { npz, entries },
      progress,
      track,
    );
    const hello = streamed.hello;
    if (dry) checkSameRun(dry, streamed.raw);
    const log: RunLog = buildLog(streamed.raw, (op) => entries.has(op.id));
    if (selectors) {
      // every selector must match, and what the agent saved must be exactly what they select
      const wanted = selectPasses(log, selectors).labels;
      const saved = log.passes.filter((p) => p.saved).map((p) => p.label);
      if (wanted.join() !== saved.join()) {
        throw new TorchlensError(
          `--layers selected ${wanted.length} passes but the agent saved ${saved.length}`,
          { hint: "this is a bug in torchlens; please report it with the --layers value" },
        );
      }
    }
    for (const p of log.passes) {
      const entry = entries.get(p.id);
      if (entry && p.array) npz.rename(entry, p.array);
    }
    try {
      await npz.close();
    } catch (err) {
      throw fsError(err, `finishing ${ACTIVATIONS}`);
    }
    npz = null;
    await run.writeJson(LOG, log);
    const wallMs = performance.now() - t0;
    const summary: ExtractSummary = {
      run: run.target,
      model: log.model.class,
      passes: log.num_passes,
      layers: log.num_layers,
      saved: entries.size,
      bytes: streamed.bytes,
      ops_dispatched: streamed.raw.numOps,
      wall_ms: Math.round(wallMs),
      forward_ms: Math.round(streamed.raw.forwardMs * 10) / 10,
      first_op_ms: streamed.firstOpMs === null ? null : Math.round(streamed.firstOpMs),
      forward_passes: dry ? 2 : 1,
      python: hello.executable,
      torch: hello.torch,
    };
    await run.writeJson(MANIFEST, {
      tool: "torchlens",
      version: TOOL_VERSION,
      protocol: hello.protocol,
      schema: log.schema,
      status: "complete",
      created: new Date().toISOString(),
      command: argv,
      agent: {
        python: hello.python,
        executable: hello.executable,
        torch: hello.torch,
        numpy: hello.numpy,
        platform: hello.platform,
        agent: hello.agent,
      },
      model: {
        file: modelFile,
        sha256: await sha256File(modelFile),
        name: opts.model ?? null,
        class: log.model.class,
      },
      input: input.manifest,
      options: { device: opts.device, seed: opts.seed, layers: selectors, grad: opts.grad },
      seed: opts.seed,
      files: { log: LOG, activations: ACTIVATIONS },
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
        forward_passes: summary.forward_passes,
      },
    });
    await run.commit();
    if (opts.graph) {
      // the graph is derived from log.json: a failed drawing does not undo the run
      try {
        await writeGraph(log, { out: path.join(run.target, "graph.svg"), progress });
      } catch (err) {
        progress.stop();
        process.stderr.write(
          `torchlens: warning: the run is complete but drawing its graph failed: ${(err as Error).message}\n` +
            `fix: run torchlens graph ${path.relative(process.cwd(), run.target) || "."} (see torchlens graph --help)\n`,
        );
      }
    }
    progress.stop();
    return summary;
  } catch (err) {
    progress.stop();
    (agent as Agent | null)?.kill();
    await npz?.abort().catch(() => undefined);
    run.discard();
    throw err;
  } finally {
    unregister();
  }
}

export const TOOL_VERSION = "0.1.0";

export function describeSummary(s: ExtractSummary): string {
  return (
    `extracted ${s.passes} passes in ${s.layers} layers of ${s.model}, ${s.saved} arrays (${formatBytes(s.bytes)}) ` +
    `in ${formatMs(s.wall_ms)} (forward pass ${formatMs(s.forward_ms)}) → ${path.relative(process.cwd(), s.run) || "."}`
  );
}
