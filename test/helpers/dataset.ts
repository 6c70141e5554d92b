/** What the dataset tests read back from a dataset directory. */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";

export const json = (file: string) => JSON.parse(readFileSync(file, "utf8"));

/** Batches a progress record says done (it keeps them as [first, last) ranges). */
export const doneCount = (file: string) =>
  (json(file).done as [number, number][]).reduce((n, [a, b]) => n + b - a, 0);

/** Every file of a dataset's layers/, by content: what byte-identical means. */
export function layerHashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(path.join(dir, "layers")).sort())
    out[name] = createHash("sha256")
      .update(readFileSync(path.join(dir, "layers", name)))
      .digest("hex");
  return out;
}
