/**
 * The recorder: an agent's frames in, a run directory out. It writes each saved pass's bytes into
 * activations.npz as they arrive (an entry begun as `p<id>`, renamed to the pass's label once the
 * log names it), assembles the raw run from the other frames, writes log.json and manifest.json,
 * and moves the run into place (commit) or removes it (discard). Which forward passes to run and
 * what to save is the extract flow's business (src/extract/); this knows frames and files only.
 */
import path from "node:path";
import type { Frame } from "../agent/wire.js";
import { TorchlensError } from "../errors.js";
import { buildLog } from "../log/build.js";
import { attachGradients } from "../log/grads.js";
import type {
  GradTarget,
  ModelRecord,
  ModuleCallRecord,
  OpRecord,
  OutputStructure,
  RawRun,
  RunLog,
} from "../log/types.js";
import { ACTIVATIONS, fsError, GRADIENTS, LOG } from "./files.js";
import { type Manifest, writeManifest } from "./manifest.js";
import { type NpzEntry, NpzWriter } from "./npz.js";
import { RunDir } from "./runDir.js";

/** One `grad` frame (docs/gradients.md): a pass's gradient, or a parameter's (negative id). */
export interface GradRecord {
  id: number;
  param?: string;
  shape: number[];
  dtype: string;
  stored_dtype: string;
  stored_nbytes: number;
  norm: number | null;
}

/** What one forward pass sent: its raw run, the bytes of its arrays, when its first op came. */
export interface Recorded {
  raw: RawRun;
  /** The gradients sent after the forward pass (--grads), in the order they came. */
  grads: GradRecord[];
  /** Bytes of array data received. */
  bytes: number;
  /** From the CLI process's start to the first pass that is not an input; null when none came. */
  firstOpMs: number | null;
}

/** The next frame of the forward pass: the agent's (`Agent.next`), or a recorded stream's. */
export type NextFrame = () => Promise<Frame>;

/** Told after every op and data frame: the passes and the array bytes received so far. */
export type OnFrame = (passes: number, bytes: number) => void;

/** One forward pass's frames, read until `done`; the bytes of saved passes go to `npz`. */
class ForwardReader {
  private model: ModelRecord | null = null;
  private readonly ops: OpRecord[] = [];
  private readonly moduleCalls: ModuleCallRecord[] = [];
  private current: { entry: NpzEntry; id: number; remaining: number; npz: NpzWriter } | null = null;
  private readonly grads: GradRecord[] = [];
  /** Entries whose bytes the agent wrote into the npz itself, waiting for their CRCs in `done`. */
  private readonly written = new Map<number, NpzEntry>();
  private bytes = 0;
  private firstOpMs: number | null = null;

  constructor(
    /** null for a forward that saves nothing: bytes sent then are an error. */
    private readonly npz: NpzWriter | null,
    private readonly entries: Map<number, NpzEntry>,
    private readonly onFrame?: OnFrame,
    /** gradients.npz, for a forward with --grads; null otherwise (a `grad` frame is then an error). */
    private readonly gradNpz: NpzWriter | null = null,
    private readonly gradEntries: Map<number, NpzEntry> = new Map(),
  ) {}

  async read(next: NextFrame): Promise<Recorded> {
    for (;;) {
      const { header, payload } = await next();
      switch (header.type) {
        case "model":
          this.model = header as unknown as ModelRecord;
          break;
        case "pass":
          await this.pass(header as unknown as OpRecord);
          break;
        case "data":
          await this.data(header.id, payload);
          break;
        case "grad":
          await this.grad(header as unknown as GradRecord);
          break;
        case "module":
          this.moduleCalls.push(header as unknown as ModuleCallRecord);
          break;
        case "done":
          return this.done(header);
        default:
          // frames from a newer agent that this CLI does not know are skipped
          break;
      }
    }
  }

  private async pass(op: OpRecord): Promise<void> {
    if (this.current)
      throw new TorchlensError(
        `the agent sent pass ${op.id} before finishing the bytes of pass ${this.current.id}`,
      );
    // from the CLI process's start (performance's time origin), which the agent's early start gains on
    if (this.firstOpMs === null && op.kind !== "input") this.firstOpMs = performance.now();
    this.ops.push(op);
    if (op.stored_dtype !== null) {
      if (!this.npz)
        throw new TorchlensError(
          `the agent sent bytes for pass ${op.id} during a forward that saves nothing`,
        );
      if (op.direct) {
        if (op.at === undefined)
          throw new TorchlensError(
            `the agent wrote the bytes of pass ${op.id} without placing them`,
          );
        const entry = this.npz.placeWritten(
          `p${op.id}`,
          op.stored_dtype,
          op.shape,
          op.stored_nbytes,
          op.at,
        );
        this.entries.set(op.id, entry);
        this.written.set(op.id, entry);
        this.bytes += op.stored_nbytes;
      } else {
        const entry = this.npz.beginEntry(
          `p${op.id}`,
          op.stored_dtype,
          op.shape,
          op.stored_nbytes,
          op.at,
        );
        this.entries.set(op.id, entry);
        if (op.stored_nbytes === 0) await this.npz.endEntry(entry);
        else this.current = { entry, id: op.id, remaining: op.stored_nbytes, npz: this.npz };
      }
    }
    this.onFrame?.(this.ops.length, this.bytes);
  }

  private async data(id: unknown, payload: Buffer[]): Promise<void> {
    const current = this.current;
    if (!current || id !== current.id)
      throw new TorchlensError(`the agent sent bytes for pass ${String(id)} out of order`);
    const npz = current.npz;
    for (const piece of payload) {
      await npz.write(current.entry, piece);
      current.remaining -= piece.length;
      this.bytes += piece.length;
    }
    if (current.remaining === 0) {
      await npz.endEntry(current.entry);
      this.current = null;
    }
    this.onFrame?.(this.ops.length, this.bytes);
  }

  /** A gradient's header: its bytes follow in data frames with its id, into gradients.npz. */
  private async grad(g: GradRecord): Promise<void> {
    if (this.current)
      throw new TorchlensError(
        `the agent sent a gradient before finishing the bytes of pass ${this.current.id}`,
      );
    if (!this.gradNpz)
      throw new TorchlensError(
        `the agent sent a gradient for pass ${g.id} during a forward without --grads`,
      );
    if (this.gradEntries.has(g.id))
      throw new TorchlensError(`the agent sent two gradients for pass ${g.id}`);
    this.grads.push(g);
    const key = g.param !== undefined ? `param:${g.param}` : `g${g.id}`;
    const entry = this.gradNpz.beginEntry(key, g.stored_dtype, g.shape, g.stored_nbytes);
    this.gradEntries.set(g.id, entry);
    if (g.stored_nbytes === 0) await this.gradNpz.endEntry(entry);
    else this.current = { entry, id: g.id, remaining: g.stored_nbytes, npz: this.gradNpz };
  }

  private done(header: Frame["header"]): Recorded {
    if (!this.model) throw new TorchlensError("the agent finished without describing the model");
    for (const [id, crc] of (header.direct_crcs ?? []) as [number, number][]) {
      const entry = this.written.get(id);
      if (!entry)
        throw new TorchlensError(`the agent sent a CRC for pass ${id}, which it did not write`);
      (this.npz as NpzWriter).setWrittenCrc(entry, crc);
      this.written.delete(id);
    }
    const missing = [...this.written.keys()][0];
    if (missing !== undefined)
      throw new TorchlensError(
        `the agent wrote the bytes of pass ${missing} but sent no CRC for them`,
      );
    const raw: RawRun = {
      model: this.model,
      ops: this.ops,
      moduleCalls: this.moduleCalls,
      outputs: header.outputs as OutputStructure,
      numOps: header.num_ops as number,
      torchCalls: header.torch_calls as number,
      forwardMs: header.forward_ms as number,
      drainMs: typeof header.drain_ms === "number" ? header.drain_ms : undefined,
      cpuMs: typeof header.cpu_ms === "number" ? header.cpu_ms : undefined,
      backwardMs: typeof header.backward_ms === "number" ? header.backward_ms : undefined,
      targetValue: typeof header.target_value === "number" ? header.target_value : null,
    };
    return { raw, grads: this.grads, bytes: this.bytes, firstOpMs: this.firstOpMs };
  }
}

async function readForward(
  next: NextFrame,
  npz: NpzWriter | null,
  entries: Map<number, NpzEntry>,
  onFrame?: OnFrame,
  grads?: { npz: NpzWriter; entries: Map<number, NpzEntry> },
): Promise<Recorded> {
  try {
    return await new ForwardReader(npz, entries, onFrame, grads?.npz, grads?.entries).read(next);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code) throw fsError(err, `writing ${ACTIVATIONS}`);
    throw err;
  }
}

/** Read a forward that saves nothing (extract's dry run); a frame with bytes is an error. */
export function readDryRun(next: NextFrame, onFrame?: OnFrame): Promise<Recorded> {
  return readForward(next, null, new Map(), onFrame);
}

export class Recorder {
  private readonly entries = new Map<number, NpzEntry>();
  private readonly gradEntries = new Map<number, NpzEntry>();

  private constructor(
    private readonly run: RunDir,
    private readonly npz: NpzWriter,
    /** gradients.npz, for a run with --grads. */
    private readonly gradNpz: NpzWriter | null,
  ) {}

  /**
   * Make the unfinished run beside `target` (see RunDir: with `force` an existing run is replaced
   * once this one is committed) with its activations.npz open for writing.
   */
  static async create(target: string, force: boolean, grads = false): Promise<Recorder> {
    const run = await RunDir.create(target, force);
    let npz: NpzWriter | null = null;
    try {
      npz = await NpzWriter.create(run.file(ACTIVATIONS), { immutablePieces: true });
    } catch (err) {
      run.discard();
      throw fsError(err, `creating ${ACTIVATIONS}`);
    }
    try {
      const gradNpz = grads
        ? await NpzWriter.create(run.file(GRADIENTS), { immutablePieces: true })
        : null;
      return new Recorder(run, npz, gradNpz);
    } catch (err) {
      await npz.abort().catch(() => undefined);
      run.discard();
      throw fsError(err, `creating ${GRADIENTS}`);
    }
  }

  /** Where the run goes when committed (absolute). */
  get target(): string {
    return this.run.target;
  }

  /** A path inside the unfinished run, for a file kept with it (an input read from stdin). */
  file(name: string): string {
    return this.run.file(name);
  }

  /**
   * Where the agent may write the saving forward's large arrays itself (the extract request's
   * `direct`, docs/wire.md): activations.npz, from the end of what is in it.
   */
  direct(): { path: string; at: number } {
    return { path: path.resolve(this.npz.path), at: this.npz.nextOffset };
  }

  /** Read the saving forward until `done`, writing each saved pass's bytes as they arrive. */
  record(next: NextFrame, onFrame?: OnFrame): Promise<Recorded> {
    const grads = this.gradNpz ? { npz: this.gradNpz, entries: this.gradEntries } : undefined;
    return readForward(next, this.npz, this.entries, onFrame, grads);
  }

  /** How many passes' arrays were written. */
  get saved(): number {
    return this.entries.size;
  }

  /**
   * The layer log of a recorded pass: a pass is saved when its bytes are in the npz; with
   * --grads, its gradient is in gradients.npz when the agent sent one.
   */
  log(recorded: Recorded, target: GradTarget | null): RunLog {
    const log = buildLog(recorded.raw, (op) => this.entries.has(op.id));
    if (this.gradNpz && target) attachGradients(log, recorded, target);
    return log;
  }

  /** Name every array by its pass's label, finish activations.npz, and write log.json. */
  async writeLog(log: RunLog): Promise<void> {
    for (const p of log.passes) {
      const entry = this.entries.get(p.id);
      if (entry && p.array) this.npz.rename(entry, p.array);
      const gradEntry = this.gradEntries.get(p.id);
      if (gradEntry && p.grad?.status === "saved") this.gradNpz?.rename(gradEntry, p.grad.array);
    }
    try {
      await this.npz.close();
    } catch (err) {
      throw fsError(err, `finishing ${ACTIVATIONS}`);
    }
    try {
      await this.gradNpz?.close();
    } catch (err) {
      throw fsError(err, `finishing ${GRADIENTS}`);
    }
    await this.run.writeJson(LOG, log);
  }

  /** Write manifest.json: the last file, once everything it describes is written. */
  writeManifest(manifest: Manifest): Promise<void> {
    return writeManifest(this.run.tmp, manifest);
  }

  /** Move the finished run into place. */
  commit(): Promise<void> {
    return this.run.commit();
  }

  /** Give up the unfinished run: stop the npz and remove the directory (nothing once committed). */
  async discard(): Promise<void> {
    await this.npz.abort().catch(() => undefined);
    await this.gradNpz?.abort().catch(() => undefined);
    this.run.discard();
  }

  /** `discard` for signal handlers: synchronous, so only the directory (the process is exiting). */
  discardNow(): void {
    this.run.discard();
  }
}
