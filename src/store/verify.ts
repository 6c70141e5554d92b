/**
 * Checking a run's stored arrays: activations.npz must hold an entry for every saved pass (else the
 * run is damaged, exit 2), and each entry's bytes must match their CRC-32 (else the array was
 * altered or damaged after extract: validate reports those passes as failed).
 */
import { usageError } from "../errors.js";
import { NpzReader } from "./npzRead.js";
import type { Run } from "./readRun.js";

/** The labels of the saved passes whose bytes fail their CRC; `onArray` is told each one checked. */
export async function verifyArrays(
  run: Run,
  onArray?: (checked: number, total: number) => void,
): Promise<string[]> {
  const reader = await NpzReader.open(run.npz);
  try {
    const saved = run.log.passes.filter((p) => p.array);
    const absent = saved.filter((p) => !reader.has(p.array as string)).map((p) => p.array);
    if (absent.length) {
      throw usageError(
        `${run.npz} is damaged: ${absent.length} saved passes have no array (${absent.slice(0, 3).join(", ")}${absent.length > 3 ? ", …" : ""})`,
        "re-run torchlens extract",
      );
    }
    const corrupted: string[] = [];
    let i = 0;
    for (const p of saved) {
      onArray?.(++i, saved.length);
      if (!(await reader.verify(p.array as string))) corrupted.push(p.label);
    }
    return corrupted;
  } finally {
    await reader.close();
  }
}
