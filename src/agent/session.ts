/**
 * A command's time with the agent, in one place for extract and validate: Ctrl-C and SIGTERM are
 * handled from the session's start to its end (kill the agent, stop the status line, the
 * command's own cleanup), and each agent process is started with its stderr shown above the
 * status line, closed when the work given it succeeds (its exit overlapping the command's next
 * steps; the session ends once it is gone) and killed when it throws.
 */
import type { Progress } from "../ui/progress.js";
import { onInterrupt } from "./interrupt.js";
import { Agent } from "./process.js";
import { choosePython } from "./python.js";

export interface SessionOptions {
  /** `--python`, else TORCHLENS_PYTHON, else a search (python.ts). */
  python?: string;
  progress: Progress;
  /** Also run on Ctrl-C and SIGTERM, after the agent is killed; synchronous (e.g. remove an
   * unfinished run); returns what it did, for the line printed. */
  onInterrupt?: () => string | undefined;
}

export class AgentSession {
  private agent: Agent | null = null;
  /** Exits of agents whose work is done (`withAgent`), waited for when the session ends. */
  private readonly closing: Promise<void>[] = [];

  private constructor(private readonly opts: SessionOptions) {}

  /** Run `body` with the session's interrupt handling registered, and unregister it after. */
  static async open<T>(
    opts: SessionOptions,
    body: (session: AgentSession) => Promise<T>,
  ): Promise<T> {
    const session = new AgentSession(opts);
    const unregister = onInterrupt(() => {
      session.agent?.kill();
      opts.progress.stop();
      return opts.onInterrupt?.();
    });
    try {
      return await body(session);
    } finally {
      // agents whose work is done may still be exiting: the session ends when they are gone
      await Promise.all(session.closing);
      unregister();
    }
  }

  /** Start an agent and let `work` talk to it; close it when `work` succeeds, kill it when it throws. */
  async withAgent<T>(work: (agent: Agent) => Promise<T>): Promise<T> {
    const { progress } = this.opts;
    progress.update("starting the Python agent", 0);
    const agent = await Agent.start({
      python: choosePython(this.opts.python),
      onStderr: (chunk) => progress.passThrough(chunk),
    });
    this.agent = agent;
    try {
      const result = await work(agent);
      // Not awaited here: Python's shutdown (a few hundred ms with torch loaded) overlaps with
      // what the command does next (writing the log, committing the run); `open` waits for it.
      this.closing.push(agent.close());
      return result;
    } catch (err) {
      agent.kill();
      throw err;
    }
  }
}
