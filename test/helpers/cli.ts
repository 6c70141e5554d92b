/** Run the real CLI (bin/torchlens.js over dist/) and Debian's Python, for integration tests. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = path.join(ROOT, "bin/torchlens.js");
/** A Python with torch: TORCHLENS_PYTHON when set, else Debian's. */
export const PYTHON = process.env.TORCHLENS_PYTHON || "/usr/bin/python3";

export function fixture(name: string): string {
  return path.join(ROOT, "fixtures", name);
}

/** The input flags a fixture is extracted with in the tests: its saved input, and for the
 * transformer `--grad`, since its attention internals are the point of it and torch runs them op
 * by op only with autograd on (under the default --no-grad it takes a fused fast path). */
export function fixtureInput(name: string): string[] {
  return ["--input", fixture(`${name}_input.pt`), ...(name === "transformer" ? ["--grad"] : [])];
}

export async function torchlens(
  args: string[],
  opts: { env?: Record<string, string>; input?: Buffer | string; cwd?: string } = {},
) {
  return execa("node", [BIN, ...args], {
    reject: false,
    env: { TORCHLENS_PYTHON: PYTHON, ...opts.env },
    input: opts.input,
    cwd: opts.cwd ?? ROOT,
  });
}

/** `torchlens` with stdout kept as bytes (for --npy and other binary output). */
export async function torchlensBytes(
  args: string[],
  opts: { env?: Record<string, string>; cwd?: string } = {},
) {
  return execa("node", [BIN, ...args], {
    reject: false,
    env: { TORCHLENS_PYTHON: PYTHON, ...opts.env },
    cwd: opts.cwd ?? ROOT,
    encoding: "buffer",
  });
}

export async function python(args: string[]) {
  return execa(PYTHON, args, { reject: false, cwd: ROOT });
}

/** Flip one byte inside the stored bytes of an npz entry (its last), so that only its CRC can tell. */
export async function flipByteIn(npz: string, entry: string): Promise<void> {
  const find = await python([
    "-c",
    `import zipfile,struct\nz=zipfile.ZipFile(${JSON.stringify(npz)})\ni=z.getinfo(${JSON.stringify(`${entry}.npy`)})\nf=open(${JSON.stringify(npz)},"rb");f.seek(i.header_offset+26);n,e=struct.unpack("<HH",f.read(4))\nprint(i.header_offset+30+n+e+i.file_size-4)`,
  ]);
  const offset = Number(find.stdout.trim());
  const bytes = readFileSync(npz);
  bytes[offset] ^= 0xff;
  writeFileSync(npz, bytes);
}

export function tempDir(prefix = "torchlens-test-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The fixtures every extract and validate test runs: one per mechanism (loops, branches,
 * in-place, noise, several inputs and outputs, shared modules, recurrent cells). */
export const FIXTURES = [
  "cnn",
  "branching_mlp",
  "dynamic_loop",
  "noisy",
  "multi_io",
  "transformer",
  "shared_branches",
  "lstm_gru",
  "two_loops",
  "nested_loops",
  "lookalike",
];

/** The fields every pass in log.json carries (docs/run-directory.md, DESIGN.md). */
export const PASS_FIELDS = [
  "label",
  "layer",
  "pass",
  "num_passes",
  "func",
  "module",
  "modules",
  "parents",
  "children",
  "shape",
  "dtype",
  "device",
  "saved",
  "array",
  "is_input",
  "is_output",
  "is_buffer",
  "is_param",
  "params",
  "num_params",
  "is_internal_source",
  "is_inplace",
  "nbytes",
  "time_ms",
  "distance_from_input",
  "distance_to_output",
];
