/**
 * Ctrl-C and SIGTERM: run the registered cleanups (stop the agent, remove the unfinished run),
 * then exit 130 or 143. Cleanups are synchronous so that nothing is left half-done. Commands
 * register theirs through an AgentSession (session.ts).
 */
import { EXIT } from "../errors.js";

const cleanups = new Set<() => void>();
let installed = false;

function handle(signal: "SIGINT" | "SIGTERM"): void {
  for (const fn of cleanups) {
    try {
      fn();
    } catch {
      // keep cleaning up
    }
  }
  process.stderr.write(
    `\ninterrupted (${signal}): stopped the agent and removed the unfinished run\n`,
  );
  process.exit(signal === "SIGINT" ? EXIT.sigint : EXIT.sigterm);
}

/** Register a cleanup for the duration of a command; returns its unregister function. */
export function onInterrupt(fn: () => void): () => void {
  if (!installed) {
    process.on("SIGINT", () => handle("SIGINT"));
    process.on("SIGTERM", () => handle("SIGTERM"));
    installed = true;
  }
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}
