/**
 * The agent process: spawn `python -m torchlens_agent`, take the hello, send requests, hand out
 * frames, and turn every way it can end (error frame, missing packages, death by signal, a broken
 * stream) into a TorchlensError with the agent's own words.
 */

import { EXIT, fsError, TorchlensError, usageError } from "../errors.js";
import { type Attempt, describeAttempts, INSTALL_HINT, type PythonChoice } from "./python.js";
import {
  dropPrestarted,
  type Exit,
  MISSING_EXIT,
  type Spawned,
  spawnAgent,
  takePrestarted,
} from "./spawn.js";
import { encodeFrame, type Frame, PROTOCOL, readFrames, WireError } from "./wire.js";

export { AGENT_ROOT } from "./spawn.js";

const STDERR_TAIL_BYTES = 64 << 10;

export interface Hello {
  type: "hello";
  protocol: number;
  agent: string;
  python: string;
  torch: string;
  numpy: string;
  platform: string;
  devices: string[];
  pid: number;
  executable: string;
}

export interface AgentError {
  type: "error";
  phase: string;
  exc_type: string;
  message: string;
  traceback: { file: string; line: number; func: string; text: string }[];
  hint: string | null;
  /** The errno's name ("ENOSPC") when the exception was a file-system failure. */
  errno?: string;
}

export interface StartOptions {
  python: PythonChoice;
  /** Receives the agent's stderr (user prints, warnings) as it comes. */
  onStderr?: (chunk: Buffer) => void;
  cwd?: string;
}

type Child = Spawned["child"];

export class Agent {
  private frameIter: AsyncGenerator<Frame>;
  private stderrTail = "";
  private exited: Promise<Exit>;

  private constructor(
    private child: Child,
    readonly hello: Hello,
    frames: AsyncGenerator<Frame>,
    tail: string,
    exited: Promise<Exit>,
    onStderr?: (chunk: Buffer) => void,
  ) {
    this.frameIter = frames;
    this.stderrTail = tail;
    this.exited = exited;
    child.stderr.removeAllListeners("data");
    child.stderr.on("data", (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString("utf8")).slice(-STDERR_TAIL_BYTES);
      onStderr?.(chunk);
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Start the first candidate Python that can run the agent and wait for its hello. */
  static async start(opts: StartOptions): Promise<Agent> {
    const attempts: Attempt[] = [];
    for (const python of opts.python.candidates) {
      const result = await Agent.tryStart(python, opts);
      if (result instanceof Agent) {
        dropPrestarted();
        return result;
      }
      attempts.push(result);
      if (opts.python.explicit) {
        throw usageError(
          `the Python named by ${opts.python.source} (${python}) cannot run the torchlens agent: ${result.problem}`,
          result.problem.startsWith("lacks")
            ? INSTALL_HINT
            : `check that ${python} is a working Python 3`,
        );
      }
    }
    throw usageError("no Python with torch, numpy and msgpack was found", INSTALL_HINT, {
      details: ["tried:", ...describeAttempts(attempts).map((l) => `  ${l}`)],
    });
  }

  private static async tryStart(python: string, opts: StartOptions): Promise<Agent | Attempt> {
    const { child, exited } = takePrestarted(python) ?? spawnAgent(python, opts.cwd);
    let tail = "";
    const early: Buffer[] = [];
    child.stderr.on("data", (chunk: Buffer) => {
      tail = (tail + chunk.toString("utf8")).slice(-STDERR_TAIL_BYTES);
      early.push(chunk);
    });
    const frames = readFrames(child.stdout as AsyncIterable<Buffer>);
    let first: IteratorResult<Frame>;
    try {
      first = await frames.next();
    } catch (err) {
      child.kill("SIGKILL");
      return {
        python,
        problem: `its output is not the torchlens protocol (${(err as Error).message})`,
      };
    }
    if (first.done) {
      const { code, signal, spawnError } = await exited;
      if (spawnError?.code === "ENOENT" || code === 127) return { python, problem: "not found" };
      if (spawnError) return { python, problem: `it could not be started (${spawnError.message})` };
      const missing = /TORCHLENS_MISSING (\S+)/.exec(tail);
      if (code === MISSING_EXIT && missing)
        return { python, problem: `lacks ${missing[1].split(",").join(", ")}` };
      return {
        python,
        problem: `it exited (${signal ?? `code ${code}`}) before saying hello: ${lastLines(tail, 3) || "no output"}`,
      };
    }
    const hello = first.value.header as unknown as Hello;
    if (hello.type !== "hello" || hello.protocol !== PROTOCOL) {
      child.kill("SIGKILL");
      return {
        python,
        problem: `it speaks protocol ${String(hello.protocol)}, this CLI speaks ${PROTOCOL} (a mismatched install)`,
      };
    }
    const agent = new Agent(child, hello, frames, tail, exited, opts.onStderr);
    for (const chunk of early) opts.onStderr?.(chunk);
    return agent;
  }

  send(request: { type: string; [key: string]: unknown }): void {
    this.child.stdin.write(encodeFrame(request));
  }

  /**
   * The next frame. A stream that ends, breaks, or carries an `error` frame becomes a
   * TorchlensError describing what happened to the agent.
   */
  async next(): Promise<Frame> {
    let item: IteratorResult<Frame>;
    try {
      item = await this.frameIter.next();
    } catch (err) {
      if (err instanceof WireError) {
        this.kill();
        throw new TorchlensError(`the agent's output broke the protocol: ${err.message}`, {
          hint: "this is a bug in torchlens; run again with --verbose and report it",
          verbose: this.stderrTail,
        });
      }
      throw err;
    }
    if (item.done) throw await this.deathError();
    if (item.value.header.type === "error")
      throw agentErrorToError(item.value.header as unknown as AgentError, this.stderrTail);
    return item.value;
  }

  private async deathError(): Promise<TorchlensError> {
    const { code, signal } = await this.exited;
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    const oom =
      signal === "SIGKILL" ? " (a kill from outside, or the system running out of memory)" : "";
    return new TorchlensError(`the Python agent ${how}${oom} before finishing`, {
      hint:
        signal === "SIGSEGV"
          ? "a crash inside torch or a C extension; run with --verbose to see its last output"
          : "run with --verbose to see the agent's output",
      details: lastLines(this.stderrTail, 5)
        ? [
            "its last output:",
            ...lastLines(this.stderrTail, 5)
              .split("\n")
              .map((l) => `  ${l}`),
          ]
        : [],
      verbose: this.stderrTail,
    });
  }

  /** Ask the agent to exit and wait for it (kills it when it does not go within `graceMs`). */
  async close(graceMs = 2000): Promise<void> {
    try {
      this.child.stdin.end();
    } catch {
      // already closed
    }
    const timer = setTimeout(() => this.kill(), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (this.child.exitCode === null) this.child.kill(signal);
  }

  get stderr(): string {
    return this.stderrTail;
  }
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split("\n").slice(-n).join("\n");
}

/** The agent's error frame in the user's terms. */
export function agentErrorToError(err: AgentError, stderr: string): TorchlensError {
  // the agent's own writes into the run (docs/wire.md, "Direct writes"): worded as the CLI's are
  if (err.phase === "write")
    return fsError({ code: err.errno, message: err.message }, "writing activations.npz");
  const where: Record<string, string> = {
    load: "loading the model file failed",
    input: "preparing the input failed",
    capture: "the model's forward pass raised",
    replay: "validation could not run",
    stimuli: "reading the stimuli failed",
    dataset: "the dataset run stopped",
    grads: "taking gradients failed",
    internal: "the agent failed",
  };
  const frames = err.traceback.map(
    (f) => `  ${f.file}:${f.line} in ${f.func}${f.text ? `: ${f.text}` : ""}`,
  );
  // a UserError is the agent's own wording of a problem with the input; the rest are the user's exceptions
  const what = err.exc_type === "UserError" ? err.message : `${err.exc_type}: ${err.message}`;
  return new TorchlensError(`${where[err.phase] ?? err.phase}: ${what}`, {
    hint:
      err.hint ??
      (err.phase === "capture"
        ? "the error is in the model's code (frames below); run the model without torchlens to check"
        : undefined),
    exitCode:
      err.phase === "input" ||
      err.phase === "load" ||
      ((err.phase === "replay" || err.phase === "stimuli" || err.phase === "grads") &&
        err.exc_type === "UserError")
        ? EXIT.usage
        : EXIT.failed,
    details: frames.length ? ["traceback (your code):", ...frames] : [],
    verbose: stderr,
  });
}
