/**
 * Starting the agent's process, kept free of heavy imports so that `bin/torchlens.js` can start the
 * agent before it loads the rest of the CLI: Python's `import torch` (a second or more) then runs
 * while Node loads its modules (a few hundred milliseconds), instead of after them.
 *
 * Only the commands that run the agent start one early. When Python is searched for, the first
 * candidate starts for real and the later ones in standby (the agent's `__main__.py`: the
 * interpreter starts and checks for the packages, then waits before importing torch), so that a
 * first candidate that lacks torch costs one interpreter start, not one per candidate in turn.
 * `Agent.start` (process.ts) adopts the processes that match the Pythons it tries; once it has its
 * agent the others are told to exit. Anything left over is killed when the CLI exits.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { choosePython } from "./python.js";

/** Folder holding the `torchlens_agent` package (put on the agent's PYTHONPATH). */
export const AGENT_ROOT = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../../python_agent",
);

export interface Exit {
  code: number | null;
  signal: string | null;
  /** Set when the process could not be started at all (ENOENT: no such program). */
  spawnError?: NodeJS.ErrnoException;
}

export interface Spawned {
  python: string;
  child: ChildProcessWithoutNullStreams;
  exited: Promise<Exit>;
  /** Waiting, after its package check, to be woken (see `wake`). */
  standby: boolean;
}

const live = new Set<ChildProcessWithoutNullStreams>();
let exitHookInstalled = false;

/** The agent's environment: the CLI's, with the agent's package on PYTHONPATH and OpenMP's waits. */
export function agentEnv(base: NodeJS.ProcessEnv, standby: boolean): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...base,
    PYTHONPATH: [AGENT_ROOT, base.PYTHONPATH].filter(Boolean).join(path.delimiter),
    PYTHONUNBUFFERED: "1",
  };
  // OpenMP's threads (torch 2 runs one per core) spin for about 3 ms between parallel regions by
  // default, taking the cores the agent's writer thread and this CLI need: a torch-2 backward of
  // resnet18 here took 0.9 s spinning, 0.3 s passive. Fully passive, every parallel region wakes
  // its threads from a futex; libgomp's short spin (GOMP_SPINCOUNT=3000, some 30 µs, which it
  // takes over the wait policy) catches the next region of a forward pass still awake: captured
  // resnet18 b1 64 against 69 ms, the GPT decoder 19 against 24 (docs/architecture.md). Other
  // OpenMP runtimes (Intel's) stay passive. A user's own setting is kept.
  if (!["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"].some((k) => k in base)) {
    env.OMP_WAIT_POLICY = "PASSIVE";
    env.GOMP_SPINCOUNT = "3000";
  }
  if (standby) env.TORCHLENS_AGENT_STANDBY = "1";
  else delete env.TORCHLENS_AGENT_STANDBY;
  return env;
}

/**
 * Start `python -m torchlens_agent` with the wire on its stdin/stdout. A `standby` agent stops
 * after checking for its packages until `wake` (or exits quietly when its stdin closes).
 */
export function spawnAgent(python: string, cwd?: string, standby = false): Spawned {
  const child = spawn(python, ["-m", "torchlens_agent"], {
    stdio: ["pipe", "pipe", "pipe"],
    env: agentEnv(process.env, standby),
    cwd,
  });
  live.add(child);
  if (!exitHookInstalled) {
    // the CLI never leaves an agent behind, whichever way it exits
    process.on("exit", () => {
      for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    });
    exitHookInstalled = true;
  }
  // a closed pipe (the agent died) surfaces through `exited`, never as an unhandled stream error
  child.stdin.on("error", () => undefined);
  const exited = new Promise<Exit>((resolve) => {
    child.once("error", (err: NodeJS.ErrnoException) => {
      if (child.pid === undefined) {
        live.delete(child);
        resolve({ code: null, signal: null, spawnError: err });
      }
    });
    child.once("close", (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  return { python, child, exited, standby };
}

/** Let a standby agent go on (once); a no-op for the others. */
function wake(spawned: Spawned): void {
  if (!spawned.standby) return;
  spawned.standby = false;
  spawned.child.stdin.write("G");
}

/** Agents started early, by Python; each is handed out once. */
const prestarted = new Map<string, Spawned>();

/** The commands that start an agent, and therefore gain from starting it first. */
const AGENT_COMMANDS = new Set(["extract", "validate"]);
/** The agent's exit code for "this Python lacks torch, numpy or msgpack" (__main__.py). */
export const MISSING_EXIT = 3;

/**
 * Called with process.argv before the CLI's modules load: starts the agent the command will ask
 * for, if it will ask for one. When Python is searched for, every candidate starts at once, all
 * but the first in standby; a candidate that turns out to lack the packages (it exits at once)
 * wakes the next, as `Agent.start` would try it later. Anything unusual in the arguments (help,
 * no command) starts nothing.
 */
export function prestart(argv: string[]): void {
  const args = argv.slice(2);
  if (!AGENT_COMMANDS.has(args[0] ?? "")) return;
  if (args.some((a) => a === "-h" || a === "--help")) return;
  let flag: string | undefined;
  for (let i = 1; i < args.length; i++) {
    if (args[i] === "--python") flag = args[i + 1];
    else if (args[i].startsWith("--python=")) flag = args[i].slice("--python=".length);
  }
  if (flag === "") return;
  const candidates = [...new Set(choosePython(flag).candidates)];
  candidates.forEach((python, i) => {
    const spawned = spawnAgent(python, undefined, i > 0);
    // until adopted it must not keep the CLI alive: a command that fails early exits at once
    setRef(spawned, false);
    prestarted.set(python, spawned);
  });
  const advance = (i: number): void => {
    const spawned = prestarted.get(candidates[i] ?? "");
    if (!spawned) return; // adopted already: Agent.start goes on from here itself
    wake(spawned);
    void spawned.exited.then(({ code, spawnError }) => {
      if (code === MISSING_EXIT || code === 127 || spawnError) advance(i + 1);
    });
  };
  advance(0);
}

/** The early-started agent for `python`, woken if it waits; null if there is none. */
export function takePrestarted(python: string): Spawned | null {
  const found = prestarted.get(python);
  if (!found) return null;
  prestarted.delete(python);
  wake(found);
  setRef(found, true);
  return found;
}

/** The agent is chosen: early-started processes nobody took are told to exit (standbys) or killed. */
export function dropPrestarted(): void {
  for (const spawned of prestarted.values()) {
    if (spawned.standby) spawned.child.stdin.end();
    else spawned.child.kill("SIGKILL");
  }
  prestarted.clear();
}

function setRef({ child }: Spawned, on: boolean): void {
  for (const handle of [child, child.stdin, child.stdout, child.stderr] as unknown as {
    ref?: () => void;
    unref?: () => void;
  }[]) {
    if (on) handle.ref?.();
    else handle.unref?.();
  }
}
