/**
 * Checking a run's stored arrays: activations.npz must hold an entry for every saved pass (else the
 * run is damaged, exit 2), and each entry's bytes must match their CRC-32 (else the array was
 * altered or damaged after extract: validate reports those passes as failed).
 */
import { usageError } from "../errors.js";
import { NpzReader } from "./npzRead.js";
import type { Run } from "./readRun.js";

/** One array an npz must hold: its key, and the name a failure is reported by. */
export interface Entry {
  key: string;
  label: string;
}

/**
 * The labels of `entries` whose bytes in the npz at `file` fail their CRC; an entry missing from
 * it makes the run damaged (exit 2: `what` names the arrays, `fix` the remedy). `onArray` is told
 * each one checked.
 */
export async function verifyEntries(
  file: string,
  entries: Entry[],
  words: { what: string; fix: string },
  onArray?: (checked: number, total: number) => void,
): Promise<string[]> {
  const reader = await NpzReader.open(file);
  try {
    const absent = entries.filter((e) => !reader.has(e.key)).map((e) => e.key);
    if (absent.length) {
      throw usageError(
        `${file} is damaged: ${absent.length} ${words.what} have no array (${absent.slice(0, 3).join(", ")}${absent.length > 3 ? ", …" : ""})`,
        words.fix,
      );
    }
    const corrupted: string[] = [];
    let i = 0;
    for (const e of entries) {
      onArray?.(++i, entries.length);
      if (!(await reader.verify(e.key))) corrupted.push(e.label);
    }
    return corrupted;
  } finally {
    await reader.close();
  }
}

/** The labels of the saved passes whose bytes fail their CRC; `onArray` is told each one checked. */
export function verifyArrays(
  run: Run,
  onArray?: (checked: number, total: number) => void,
): Promise<string[]> {
  const saved = run.log.passes.flatMap((p) => (p.array ? [{ key: p.array, label: p.label }] : []));
  return verifyEntries(
    run.npz,
    saved,
    { what: "saved passes", fix: "re-run torchlens extract" },
    onArray,
  );
}
