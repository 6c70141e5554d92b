/**
 * The files of a run directory: their names, and how its JSON files are written and read with
 * failures in the user's terms (a full disk, a missing or damaged file). The other store modules
 * build on this one; it imports none of them.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { fsError, usageError } from "../errors.js";

export { fsError };

export const MANIFEST = "manifest.json";
export const LOG = "log.json";
export const ACTIVATIONS = "activations.npz";
export const GRADIENTS = "gradients.npz";

/** Write `value` as the run's JSON file `file` (named `name` in messages), one space per level. */
export async function writeJson(file: string, name: string, value: unknown): Promise<void> {
  try {
    await fs.writeFile(file, `${JSON.stringify(value, null, 1)}\n`);
  } catch (err) {
    throw fsError(err, `writing ${name}`);
  }
}

/** Read the JSON file `name` of the run `dir`: missing means not a run, unparsable means damaged. */
export async function readJson(dir: string, name: string): Promise<unknown> {
  let text: string;
  try {
    text = await fs.readFile(path.join(dir, name), "utf8");
  } catch {
    throw usageError(
      `${dir} is not a torchlens run: it has no ${name}`,
      "give the directory that `torchlens extract -o` created",
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw usageError(
      `${path.join(dir, name)} is damaged: ${(err as Error).message}`,
      "re-run torchlens extract to make the run again",
    );
  }
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
