/**
 * Extract's input flags → what the agent is asked to build (`InputRequest`) and what the manifest
 * records (`ManifestInput`, with the file's sha256 so that validate can tell it unchanged). An
 * input read from stdin is copied into the run first, so the run keeps the exact input it was made
 * from.
 */
import { createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import type { InputRequest } from "../agent/wire.js";
import { usageError } from "../errors.js";
import { sha256File } from "../store/files.js";
import type { ManifestInput } from "../store/manifest.js";

/** The input flags (a part of ModelOptions). */
export interface InputFlags {
  input?: string;
  inputShape?: string[];
  inputDtype: string;
  seed: number;
}

export interface InputSpec {
  request: InputRequest;
  manifest: ManifestInput;
}

/** Input shapes: "1,3,224,224" per input; several inputs as repeated flags or joined by ";". */
export function parseShapes(specs: string[]): number[][] {
  return specs
    .flatMap((s) => s.split(";"))
    .map((spec) => {
      const dims = spec
        .trim()
        .split(/[,x ]+/)
        .filter(Boolean);
      if (!dims.length || dims.some((d) => !/^\d+$/.test(d))) {
        throw usageError(
          `--input-shape ${JSON.stringify(spec)} is not a shape`,
          "give sizes separated by commas, e.g. --input-shape 1,3,224,224 (repeat the flag for several inputs)",
        );
      }
      return dims.map(Number);
    });
}

const NPY_MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);

/** Copy stdin to `file(name)` (a path in the run); returns the name: input.npy or input.pt. */
async function saveStdin(file: (name: string) => string): Promise<string> {
  if (process.stdin.isTTY)
    throw usageError(
      "--input - reads the input from stdin, but stdin is a terminal",
      "pipe a .pt or .npy file in: torchlens extract model.py --input - < x.pt",
    );
  const tmp = file("input.tmp");
  await pipeline(process.stdin, createWriteStream(tmp));
  const handle = await fs.open(tmp, "r");
  const head = Buffer.alloc(6);
  await handle.read(head, 0, 6, 0);
  await handle.close();
  const name = head.equals(NPY_MAGIC) ? "input.npy" : "input.pt";
  await fs.rename(tmp, file(name));
  return name;
}

/** The input the flags ask for; `file` gives paths inside the unfinished run (for stdin's copy). */
export async function inputSpec(
  opts: InputFlags,
  file: (name: string) => string,
): Promise<InputSpec> {
  if (opts.input && opts.inputShape?.length)
    throw usageError("--input and --input-shape were both given", "use one of them");
  if (opts.input === "-") {
    const name = await saveStdin(file);
    return {
      request: { kind: "file", path: file(name) },
      manifest: {
        kind: "file",
        source: "stdin",
        path: name,
        in_run: true,
        sha256: await sha256File(file(name)),
      },
    };
  }
  if (opts.input) {
    const abs = path.resolve(opts.input);
    const stat = await fs.stat(abs).catch(() => null);
    if (!stat?.isFile())
      throw usageError(
        `input file not found: ${opts.input}`,
        "check the path given to --input (a .pt or .npy file, or - for stdin)",
      );
    return {
      request: { kind: "file", path: abs },
      manifest: { kind: "file", path: abs, in_run: false, sha256: await sha256File(abs) },
    };
  }
  if (opts.inputShape?.length) {
    const shapes = parseShapes(opts.inputShape);
    return {
      request: { kind: "shape", shapes, dtype: opts.inputDtype },
      manifest: { kind: "shape", shapes, dtype: opts.inputDtype, seed: opts.seed },
    };
  }
  return { request: { kind: "example" }, manifest: { kind: "example" } };
}
