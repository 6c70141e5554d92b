/**
 * Errors as values with a user-facing message. Every failure a user can meet is a TorchlensError:
 * `message` names the problem, `hint` the fix, `exitCode` what the process returns. The CLI prints
 * them in one place (cli/report.ts); nothing else decides wording or exit codes.
 */

/** Exit codes, documented in `torchlens --help`. */
export const EXIT = {
  ok: 0,
  /** The model, the agent or a check failed (the user's forward raised, the agent died, validation found a mismatch). */
  failed: 1,
  /** Bad input or usage: a missing file, a bad flag, no Python with torch, a damaged or foreign run. */
  usage: 2,
  /** Interrupted by Ctrl-C (SIGINT). */
  sigint: 130,
  /** Stopped by SIGTERM. */
  sigterm: 143,
} as const;

export interface ErrorDetails {
  hint?: string;
  exitCode?: number;
  /** Extra lines shown under the message (e.g. the user's traceback frames). */
  details?: string[];
  /** Shown only with --verbose (e.g. the agent's stderr). */
  verbose?: string;
  cause?: unknown;
}

export class TorchlensError extends Error {
  readonly hint?: string;
  readonly exitCode: number;
  readonly details: string[];
  readonly verbose?: string;

  constructor(message: string, opts: ErrorDetails = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "TorchlensError";
    this.hint = opts.hint;
    this.exitCode = opts.exitCode ?? EXIT.failed;
    this.details = opts.details ?? [];
    this.verbose = opts.verbose;
  }
}

/** Bad input or usage (exit 2). */
export function usageError(
  message: string,
  hint?: string,
  extra: Omit<ErrorDetails, "hint" | "exitCode"> = {},
): TorchlensError {
  return new TorchlensError(message, { ...extra, hint, exitCode: EXIT.usage });
}

export function isTorchlensError(err: unknown): err is TorchlensError {
  return err instanceof TorchlensError;
}

/** Turn a failed filesystem call into an error that says what to do. */
export function fsError(err: unknown, what: string): TorchlensError {
  const e = err as NodeJS.ErrnoException;
  const reasons: Record<string, [string, string]> = {
    ENOSPC: ["the disk is full", "free some space or write the run elsewhere with -o"],
    EDQUOT: ["the disk quota is exceeded", "free some space or write the run elsewhere with -o"],
    EACCES: ["permission denied", "choose a directory you can write to with -o"],
    EPERM: ["permission denied", "choose a directory you can write to with -o"],
    EROFS: ["the file system is read-only", "choose a writable directory with -o"],
    ENOENT: ["a directory on the way disappeared", "check that the output location still exists"],
  };
  const [reason, hint] = reasons[e?.code ?? ""] ?? [
    e?.message ?? String(err),
    "check the output location",
  ];
  return new TorchlensError(`${what} failed: ${reason}`, { hint, cause: err });
}
