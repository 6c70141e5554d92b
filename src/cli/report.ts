/** How errors reach people: one paragraph naming the problem and the fix; stack traces only with --verbose. */
import { EXIT, isTorchlensError } from "../errors.js";

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
