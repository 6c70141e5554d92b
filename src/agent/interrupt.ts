/**
 * Ctrl-C and SIGTERM: run the registered cleanups (stop the agent, remove the unfinished run),
 * then exit 130 or 143. Cleanups are synchronous so that nothing is left half-done. Commands
 * register theirs through an AgentSession (session.ts).
 */
import { EXIT } from "../errors.js";

/** A cleanup may say what it did ("removed the unfinished run"), for the one line printed. */
type Cleanup = () => string | undefined;

const cleanups = new Set<Cleanup>();
let installed = false;

function handle(signal: "SIGINT" | "SIGTERM"): void {
  const done = new Set<string>(["stopped the agent"]);
  for (const fn of cleanups) {
    try {
      const what = fn();
      if (what) done.add(what);
    } catch {
      // keep cleaning up
    }
  }
  process.stderr.write(`\ninterrupted (${signal}): ${[...done].join(", ")}\n`);
  process.exit(signal === "SIGINT" ? EXIT.sigint : EXIT.sigterm);
}

/** Register a cleanup for the duration of a command; returns its unregister function. */
export function onInterrupt(fn: Cleanup): () => void {
  if (!installed) {
    process.on("SIGINT", () => handle("SIGINT"));
    process.on("SIGTERM", () => handle("SIGTERM"));
    installed = true;
  }
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}
