/**
 * The errors of reading an .npz, raised here so that every "can't read" and every "damaged"
 * reads alike, whichever part of the archive (zip.ts, npzRead.ts) found the problem.
 */
import { EXIT, TorchlensError } from "../errors.js";

/** A .npz that can't be read as asked (missing, damaged, compressed, unknown key); exit code 2. */
export class NpzReadError extends TorchlensError {
  override name = "NpzReadError";
  constructor(message: string, hint?: string) {
    super(message, { hint, exitCode: EXIT.usage });
  }
}

/** The archive `fileName` is damaged: `what` says how. */
export function damagedError(fileName: string, what: string): NpzReadError {
  return new NpzReadError(
    `${fileName} is damaged: ${what} — re-run extract`,
    "the run was probably interrupted or the file was cut short; `torchlens extract` writes it again",
  );
}

/** Opening `file` failed with `err` (missing, a directory, not readable). */
export function openError(err: unknown, file: string): NpzReadError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") {
    return new NpzReadError(
      `${file} does not exist`,
      "run `torchlens extract` first, or check the run directory",
    );
  }
  if (code === "EISDIR") return new NpzReadError(`${file} is a directory, not an .npz file`);
  if (code === "EACCES" || code === "EPERM")
    return new NpzReadError(`${file} can't be read: permission denied`);
  return new NpzReadError(`${file} can't be read: ${(err as Error).message}`);
}
