/**
 * manifest.json: what made a run and how it went. The type follows docs/manifest.schema.json
 * field for field; the recorder writes it last (just before the run is moved into place) and every
 * command that opens a run reads it first, through `readManifest`. Keys are written in one fixed
 * order, so two runs of the same extract differ only in times, paths and the machine.
 */
import path from "node:path";
import { usageError } from "../errors.js";
import type { GradTarget } from "../log/types.js";
import { MANIFEST, readJson, writeJson } from "./files.js";

/** The Python side, from the agent's hello. */
export interface ManifestAgent {
  python: string;
  executable: string;
  torch: string;
  numpy: string;
  platform: string;
  agent: string;
}

export interface ManifestModel {
  /** Absolute path of the model file. */
  file: string;
  sha256: string;
  /** `--model NAME`, or null for the file's `build_model()` or `model`. */
  name: string | null;
  class: string;
}

/** Where the inputs came from. */
export type ManifestInput =
  /** `--input FILE`, or `--input -` (then `source: "stdin"` and `path` is the copy in the run). */
  | { kind: "file"; source?: "stdin"; path: string; in_run: boolean; sha256: string }
  /** `--input-shape`: random normal inputs drawn with `seed`. */
  | { kind: "shape"; shapes: number[][]; dtype: string; seed: number }
  /** The model file's `example_input()`. */
  | { kind: "example" };

export interface ManifestOptions {
  device: string;
  seed: number;
  /** The `--layers` selectors split at commas; null when every pass was saved. */
  layers: string[] | null;
  /** Autograd in the forward pass; absent in runs made before the choice existed (autograd on). */
  grad?: boolean;
  /** --grads (docs/gradients.md): the target and whether the parameters' gradients were saved. */
  grads?: { target: GradTarget; params: boolean };
}

export interface Manifest {
  tool: "torchlens";
  /** The torchlens CLI's version (src/version.ts). */
  version: string;
  /** The wire protocol the run was made with. */
  protocol: number;
  /** log.json's schema version. */
  schema: string;
  status: "complete" | "partial";
  /** Why a run is partial (reserved: this version never writes partial runs). */
  why?: string;
  /** ISO 8601, UTC. */
  created: string;
  /** The torchlens script's path, then the arguments as given. */
  command: string[];
  agent: ManifestAgent;
  model: ManifestModel;
  input: ManifestInput;
  options: ManifestOptions;
  seed: number;
  /** `gradients` only in runs made with --grads. */
  files: { log: string; activations: string; gradients?: string };
  counts: { passes: number; layers: number; saved: number; bytes: number; ops_dispatched: number };
  timings: {
    wall_ms: number;
    forward_ms: number;
    first_op_ms: number | null;
    /** Forwards run: 2 when --layers needed final labels (a dry run first). Absent in runs
     * written before this name, which have only `forward_passes`. */
    forwards?: 1 | 2;
    /** The old name of `forwards`, written beside it for one release (CHANGELOG.md). */
    forward_passes: 1 | 2;
  };
}

/** The order keys are written in, per object: the order of every run written so far. */
const KEY_ORDER = {
  manifest: [
    "tool",
    "version",
    "protocol",
    "schema",
    "status",
    "why",
    "created",
    "command",
    "agent",
    "model",
    "input",
    "options",
    "seed",
    "files",
    "counts",
    "timings",
  ],
  agent: ["python", "executable", "torch", "numpy", "platform", "agent"],
  model: ["file", "sha256", "name", "class"],
  // one list for the three kinds: each has its keys in this order and lacks the others
  input: ["kind", "source", "path", "in_run", "sha256", "shapes", "dtype", "seed"],
  options: ["device", "seed", "layers", "grad", "grads"],
  files: ["log", "activations", "gradients"],
  counts: ["passes", "layers", "saved", "bytes", "ops_dispatched"],
  timings: ["wall_ms", "forward_ms", "first_op_ms", "forwards", "forward_passes"],
} as const;

const NESTED = ["agent", "model", "input", "options", "files", "counts", "timings"] as const;

function inOrder(value: object, keys: readonly string[]): Record<string, unknown> {
  const v = value as Record<string, unknown>;
  return Object.fromEntries(keys.filter((k) => v[k] !== undefined).map((k) => [k, v[k]]));
}

/** Write `manifest` as `dir`/manifest.json. */
export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  const out = inOrder(manifest, KEY_ORDER.manifest);
  for (const key of NESTED) out[key] = inOrder(manifest[key], KEY_ORDER[key]);
  await writeJson(path.join(dir, MANIFEST), MANIFEST, out);
}

/**
 * Read `dir`/manifest.json: an error (exit 2) when it is missing, damaged or not torchlens's.
 * Fields are not checked one by one (docs/manifest.schema.json does that in the tests); runs of
 * earlier versions lack fields added since, as the type's optional fields say.
 */
export async function readManifest(dir: string): Promise<Manifest> {
  const manifest = (await readJson(dir, MANIFEST)) as Manifest | null;
  if (manifest?.tool !== "torchlens")
    throw usageError(
      `${dir}/${MANIFEST} was not written by torchlens`,
      "give the directory that `torchlens extract -o` created",
    );
  return manifest;
}

/** True when `dir` holds a torchlens manifest (so `extract --force` may replace it). */
export async function isRun(dir: string): Promise<boolean> {
  return readManifest(dir).then(
    () => true,
    () => false,
  );
}
