/**
 * manifest.json's writer and reader (src/store/manifest.ts), and the run's sources as validate finds
 * them from it (runSources): against the committed golden runs and hand-made runs, no Python.
 */
import { cpSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, test } from "@jest/globals";
import { isTorchlensError } from "../../src/errors.js";
import { sha256File } from "../../src/store/files.js";
import { isRun, type Manifest, readManifest, writeManifest } from "../../src/store/manifest.js";
import { readRun, runSources } from "../../src/store/readRun.js";
import { tempDir } from "../helpers/cli.js";

const GOLDEN_RUNS = new URL("../golden/runs/", import.meta.url).pathname;
const goldenRuns = readdirSync(GOLDEN_RUNS).map((name) => path.join(GOLDEN_RUNS, name));

const tmp = tempDir("torchlens-manifest-");
afterAll(() => tmp.cleanup());

/** The same object with every object's keys in reverse order. */
function reversed(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reversed);
  if (value && typeof value === "object")
    return Object.fromEntries(
      Object.entries(value)
        .reverse()
        .map(([k, v]) => [k, reversed(v)]),
    );
  return value;
}

describe("writeManifest and readManifest", () => {
  test.each(goldenRuns.map((dir) => [path.basename(dir), dir]))(
    "%s: read, then written again, is the same file byte for byte",
    async (name, dir) => {
      const out = path.join(tmp.dir, `again-${name}`);
      mkdirSync(out);
      await writeManifest(out, await readManifest(dir));
      expect(readFileSync(path.join(out, "manifest.json"), "utf8")).toBe(
        readFileSync(path.join(dir, "manifest.json"), "utf8"),
      );
    },
  );

  test("keys are written in the fixed order whatever order the object has", async () => {
    const dir = goldenRuns[0];
    const out = path.join(tmp.dir, "reversed");
    mkdirSync(out);
    await writeManifest(out, reversed(await readManifest(dir)) as Manifest);
    expect(readFileSync(path.join(out, "manifest.json"), "utf8")).toBe(
      readFileSync(path.join(dir, "manifest.json"), "utf8"),
    );
  });

  test("a run made before --grad existed reads, without options.grad", async () => {
    const m = (await readManifest(goldenRuns[0])) as Manifest;
    delete m.options.grad;
    const out = path.join(tmp.dir, "old");
    mkdirSync(out);
    await writeManifest(out, m);
    const back = await readManifest(out);
    expect(back.options).toEqual({ device: "cpu", seed: 0, layers: null });
    expect(Object.keys(back.options)).toEqual(["device", "seed", "layers"]);
  });

  test.each([
    ["a run without manifest.json", null, /is not a torchlens run: it has no manifest.json/],
    ["a manifest.json that is not JSON", "{ nope", /manifest.json is damaged/],
    [
      "another tool's manifest.json",
      '{"tool": "other"}',
      /manifest.json was not written by torchlens/,
    ],
    ["a manifest.json holding null", "null", /manifest.json was not written by torchlens/],
  ])("%s is a usage error (exit 2), and not a run to replace", async (what, text, message) => {
    const dir = path.join(tmp.dir, `bad-${what.replace(/\W/g, "")}`);
    mkdirSync(dir);
    if (text !== null) writeFileSync(path.join(dir, "manifest.json"), text);
    const err = await readManifest(dir).catch((e: unknown) => e);
    expect(isTorchlensError(err) && err.exitCode).toBe(2);
    expect(String(err)).toMatch(message);
    expect(await isRun(dir)).toBe(false);
  });

  test("isRun knows a golden run", async () => {
    expect(await isRun(goldenRuns[0])).toBe(true);
  });
});

describe("runSources: the model file and input a run was made from, checked unchanged", () => {
  /** A copy of a golden run whose manifest names `model.py` and `input` made here. */
  async function runWith(name: string, input: Manifest["input"], inputFile?: string) {
    const dir = path.join(tmp.dir, name);
    cpSync(goldenRuns[0], dir, { recursive: true });
    const modelFile = path.join(tmp.dir, `${name}-model.py`);
    writeFileSync(modelFile, "model = None\n");
    if (inputFile) writeFileSync(inputFile, "input bytes");
    const m = await readManifest(dir);
    m.model.file = modelFile;
    m.model.sha256 = await sha256File(modelFile);
    m.input = input;
    await writeManifest(dir, m);
    return { run: await readRun(dir), modelFile };
  }

  test("an input file outside the run: its absolute path, refused once changed", async () => {
    const file = path.join(tmp.dir, "outside.pt");
    writeFileSync(file, "input bytes");
    const sha256 = await sha256File(file);
    const { run, modelFile } = await runWith(
      "outside",
      { kind: "file", path: file, in_run: false, sha256 },
      file,
    );
    expect(await runSources(run, false)).toEqual({
      modelFile,
      input: { kind: "file", path: file },
    });
    writeFileSync(file, "other bytes");
    await expect(runSources(run, false)).rejects.toThrow(
      /the input file changed since the run was made/,
    );
  });

  test("an input read from stdin: the copy inside the run", async () => {
    const dir = path.join(tmp.dir, "stdin");
    const { run } = await runWith(
      "stdin",
      { kind: "file", source: "stdin", path: "input.pt", in_run: true, sha256: "" },
      path.join(dir, "input.pt"),
    );
    expect((await runSources(run, false)).input).toEqual({
      kind: "file",
      path: path.join(dir, "input.pt"),
    });
  });

  test("shape and example inputs go to the agent without their seed", async () => {
    const shape = await runWith("shape", {
      kind: "shape",
      shapes: [[2, 3]],
      dtype: "float32",
      seed: 4,
    });
    expect((await runSources(shape.run, false)).input).toEqual({
      kind: "shape",
      shapes: [[2, 3]],
      dtype: "float32",
    });
    const example = await runWith("example", { kind: "example" });
    expect((await runSources(example.run, false)).input).toEqual({ kind: "example" });
  });

  test("a changed model file is refused unless allowed; a missing one always", async () => {
    const { run, modelFile } = await runWith("changed", { kind: "example" });
    writeFileSync(modelFile, "model = 1\n");
    await expect(runSources(run, false)).rejects.toThrow(
      /the model file changed since the run was made/,
    );
    expect((await runSources(run, true)).modelFile).toBe(modelFile);
    run.manifest.model.file = path.join(tmp.dir, "gone.py");
    await expect(runSources(run, true)).rejects.toThrow(/the run's model file is gone/);
  });
});
