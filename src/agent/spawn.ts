/**
 * Starting the agent's process, kept free of heavy imports so that `bin/torchlens.js` can start the
 * agent before it loads the rest of the CLI: Python's `import torch` (a second or more) then runs
 * while Node loads its modules (a few hundred milliseconds), instead of after them.
 *
 * Only the first Python candidate is started early, and only for the commands that run the agent;
 * `Agent.start` (process.ts) adopts it if it asks for the same Python, and starts the others itself.
 * A started process that nobody adopts is killed when the CLI exits.
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
}

const live = new Set<ChildProcessWithoutNullStreams>();
let exitHookInstalled = false;

/** Start `python -m torchlens_agent` with the wire on its stdin/stdout. */
export function spawnAgent(python: string, cwd?: string): Spawned {
  const env = {
    ...process.env,
    PYTHONPATH: [AGENT_ROOT, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter),
    PYTHONUNBUFFERED: "1",
  };
  const child = spawn(python, ["-m", "torchlens_agent"], {
    stdio: ["pipe", "pipe", "pipe"],
    env,
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
  return { python, child, exited };
}

/** Agents started early, by Python; each is handed out once. */
const prestarted = new Map<string, Spawned>();
let adopted = false;

/** The commands that start an agent, and therefore gain from starting it first. */
const AGENT_COMMANDS = new Set(["extract", "validate"]);
/** The agent's exit code for "this Python lacks torch, numpy or msgpack" (__main__.py). */
export const MISSING_EXIT = 3;

/**
 * Called with process.argv before the CLI's modules load: starts the agent the command will ask
 * for, if it will ask for one. When Python is searched for, a candidate that turns out to lack
 * the packages (it exits at once) makes way for the next one, as `Agent.start` would do later.
 * Anything unusual in the arguments (help, no command) starts nothing.
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
  const choice = choosePython(flag);
  const startAt = (i: number): void => {
    const python = choice.candidates[i];
    if (python === undefined || adopted || prestarted.has(python)) return;
    const spawned = spawnAgent(python);
    // until adopted it must not keep the CLI alive: a command that fails early exits at once
    setRef(spawned, false);
    prestarted.set(python, spawned);
    if (choice.explicit) return;
    const next = () => startAt(i + 1);
    spawned.child.once("exit", (code) => {
      if (code === MISSING_EXIT || code === 127) next();
    });
    spawned.child.once("error", () => {
      if (spawned.child.pid === undefined) next();
    });
  };
  startAt(0);
}

/** The early-started agent for `python`, if there is one (it may have exited already). */
export function takePrestarted(python: string): Spawned | null {
  const found = prestarted.get(python);
  if (!found) return null;
  prestarted.delete(python);
  adopted = true;
  setRef(found, true);
  return found;
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
