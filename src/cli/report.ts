/**
 * How errors and exit codes reach people: one paragraph naming the problem and the fix, stack
 * traces only with --verbose; the exit codes as `--help` lists them.
 */
import { EXIT, isTorchlensError } from "../errors.js";

/** The exit codes (errors.ts EXIT), under the help of torchlens and of the commands that run the agent. */
export const EXIT_HELP = `
Exit codes:
  0    success
  1    the model or the agent failed (the forward pass raised, the agent died), or a check failed
  2    bad input or usage (a missing file, a bad flag, no Python with torch, a damaged run)
  130  interrupted (Ctrl-C); 143 stopped by SIGTERM
`;

export function reportError(
  err: unknown,
  verbose: boolean,
  stream: NodeJS.WritableStream = process.stderr,
): number {
  if (isTorchlensError(err)) {
    const lines = [`torchlens: error: ${err.message}`];
    for (const d of err.details) lines.push(d);
    if (err.hint) lines.push(`fix: ${err.hint}`);
    if (verbose && err.verbose) lines.push("--- agent stderr ---", err.verbose.trimEnd());
    stream.write(`${lines.join("\n")}\n`);
    return err.exitCode;
  }
  const e = err as Error;
  stream.write(`torchlens: internal error: ${e?.message ?? String(err)}\n`);
  stream.write(
    verbose && e?.stack
      ? `${e.stack}\n`
      : "this is a bug in torchlens; run again with --verbose and report what it prints\n",
  );
  return EXIT.failed;
}
