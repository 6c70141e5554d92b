/**
 * torchlens validate on runs made with --grads (docs/gradients.md, "Validation"), through the real
 * CLI and agent: each saved gradient replays from its children's, the inputs' and parameters'
 * match a plain backward pass, and an altered gradient fails, named.
 */
import { cpSync, existsSync, readFileSync } from "node:fs";
import path from "node:path";
import type { RunLog } from "../../src/log/types.js";
import type { ValidationReport } from "../../src/validate/report.js";
import { fixture, flipByteIn, python, tempDir, torchlens } from "../helpers/cli.js";

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** The fixture's saved input where it has one (else its example_input()). */
function inputOf(name: string): string[] {
  const file = fixture(`${name}_input.pt`);
  return existsSync(file) ? ["--input", file] : [];
}

async function extractTo(name: string, extra: string[] = [], dir = name): Promise<string> {
  const run = path.join(tmp.dir, dir);
  const res = await torchlens([
    "extract",
    fixture(`${name}.py`),
    ...inputOf(name),
    "-o",
    run,
    "--force",
    ...extra,
  ]);
  if (res.exitCode !== 0) throw new Error(res.stderr);
  return run;
}

async function validate(run: string) {
  const res = await torchlens(["validate", run, "--json"]);
  const report = res.stdout ? (JSON.parse(res.stdout) as ValidationReport) : null;
  return { res, report };
}

const readLog = (run: string) =>
  JSON.parse(readFileSync(path.join(run, "log.json"), "utf8")) as RunLog;

/** Every pass whose gradient the log records (saved or none): what the replay gives a verdict. */
const recorded = (log: RunLog) => log.passes.filter((p) => p.grad).map((p) => p.label);

function copyRun(run: string, name: string): string {
  const copy = path.join(tmp.dir, name);
  cpSync(run, copy, { recursive: true });
  return copy;
}

/** Replace gradients in a run's gradients.npz (and mark them saved in its log), with numpy. */
async function setGradients(run: string, values: Record<string, unknown>, addOne = false) {
  const npz = path.join(run, "gradients.npz");
  const script = [
    "import json, sys, numpy as np",
    `npz, log_file, values, add_one = ${JSON.stringify(npz)}, ${JSON.stringify(path.join(run, "log.json"))}, json.loads(sys.argv[1]), ${addOne ? "True" : "False"}`,
    "z = dict(np.load(npz))",
    "log = json.load(open(log_file))",
    "for p in log['passes']:",
    "    if p['label'] not in values: continue",
    "    v = np.asarray(values[p['label']], np.float32).reshape(p['shape'])",
    "    z[p['label']] = z[p['label']] + v if add_one else v",
    "    p['grad'] = {'status': 'saved', 'array': p['label'], 'shape': p['shape'], 'dtype': p['dtype'], 'stored_dtype': '<f4', 'norm': float(np.linalg.norm(z[p['label']]))}",
    "np.savez(npz, **z)",
    "json.dump(log, open(log_file, 'w'))",
  ].join("\n");
  const r = await python(["-c", script, JSON.stringify(values)]);
  if (r.exitCode !== 0) throw new Error(r.stderr);
}

function expectValid(
  res: { exitCode?: number; stderr: string },
  report: ValidationReport | null,
  log: RunLog,
) {
  expect(res.stderr).not.toMatch(/FAIL/);
  expect(res.exitCode).toBe(0);
  expect(report?.ok).toBe(true);
  const g = report?.gradients;
  expect(g?.ok).toBe(true);
  expect(g?.verdicts.filter((v) => v.status === "failed")).toEqual([]);
  expect(g?.verdicts.map((v) => v.label)).toEqual(recorded(log));
  expect(g?.ground_truth.filter((t) => t.kind === "input").map((t) => t.pass)).toEqual(log.inputs);
  expect(g?.ground_truth.every((t) => t.ok)).toBe(true);
}

describe.each(["lstm_gru", "two_loops", "branching_mlp", "shared_branches", "noisy"])(
  "validate a --grads run of %s",
  (name) => {
    test("every saved gradient replays from its children's; the inputs' match a plain backward pass", async () => {
      const run = await extractTo(name, ["--grads"]);
      const { res, report } = await validate(run);
      const log = readLog(run);
      expectValid(res, report, log);
      expect(report?.gradients?.counts.passed).toBe(recorded(log).length); // nothing exempt
      const human = await torchlens(["validate", run]);
      expect(human.exitCode).toBe(0);
      expect(human.stderr).toMatch(
        /gradients of the sum of the outputs: \d+ passed, 0 failed, 0 exempt of \d+ passes replayed from their children; 1 input match a plain backward pass/,
      );
      expect(human.stderr).toMatch(/^valid: /m);
    });
  },
);

describe("validate --grads with other targets", () => {
  test("--target output_1[0, 2]: one element of an output", async () => {
    const run = await extractTo("two_loops", ["--grads", "--target", "output_1[0, 2]"], "idx");
    const { res, report } = await validate(run);
    expectValid(res, report, readLog(run));
    expect(report?.gradients?.target).toEqual({ kind: "index", output: "output_1", index: [0, 2] });
  });

  test("--loss loss_fn --param-grads: a loss reading the input too, and the parameters' gradients", async () => {
    const run = await extractTo("grads_loss", ["--grads", "--loss", "loss_fn", "--param-grads"]);
    const { res, report } = await validate(run);
    const log = readLog(run);
    expectValid(res, report, log);
    const params = report?.gradients?.ground_truth.filter((t) => t.kind === "param") ?? [];
    expect(params.map((t) => t.param)).toEqual(log.gradients?.params.map((q) => q.address));
    expect(params.length).toBe(6);
    const human = await torchlens(["validate", run]);
    expect(human.stderr).toMatch(
      /gradients of loss_fn\(output, \*inputs\): .* 1 input and 6 parameters match a plain backward pass/,
    );
  });

  test("--layers: a pass whose children's gradients were not saved is exempt, named as such", async () => {
    const run = await extractTo("branching_mlp", ["--grads", "--layers", "linear"], "layers");
    const { res, report } = await validate(run);
    expect(res.exitCode).toBe(0);
    const g = report?.gradients;
    expect(g?.verdicts.map((v) => v.label)).toEqual(recorded(readLog(run)));
    expect(g?.verdicts.some((v) => v.status === "exempt" && /--layers/.test(v.reason ?? ""))).toBe(
      true,
    );
    expect(g?.counts.failed).toBe(0);
  });

  test("a run without gradients has no gradients section: the report is as before", async () => {
    const run = await extractTo("two_loops", [], "plain");
    const { res, report } = await validate(run);
    expect(res.exitCode).toBe(0);
    expect(report && "gradients" in report).toBe(false);
    const human = await torchlens(["validate", run]);
    expect(human.stderr).not.toMatch(/gradients/);
  });
});

describe("validate --grads catches what is wrong", () => {
  test("one saved gradient altered (gradients.npz rewritten consistently) fails, naming that pass", async () => {
    const run = copyRun(path.join(tmp.dir, "two_loops"), "two_loops-altered");
    const victim = "tanh_1_4:2";
    const pass = readLog(run).passes.find((p) => p.label === victim);
    expect(pass?.grad?.status).toBe("saved");
    const bump = Array.from({ length: (pass?.shape ?? []).reduce((a, b) => a * b, 1) }, () => 0.25);
    await setGradients(run, { [victim]: bump }, true);
    const { res, report } = await validate(run);
    expect(res.exitCode).toBe(1);
    expect(report?.ok).toBe(false);
    expect(report?.counts.failed).toBe(0); // the activations are fine
    const failed = report?.gradients?.verdicts.filter((v) => v.status === "failed") ?? [];
    expect(failed.map((v) => v.label)).toContain(victim);
    expect(failed.find((v) => v.label === victim)?.reason).toMatch(
      /differs from the saved gradient/,
    );
    const human = await torchlens(["validate", run]);
    expect(human.exitCode).toBe(1);
    expect(human.stderr).toMatch(
      /FAIL gradient of tanh_1_4:2 \[tanh\]: the sum of its children's replayed gradients differs from the saved gradient/,
    );
    expect(human.stderr).toMatch(/^INVALID: /m);
  });

  test("a byte flipped inside a stored gradient fails its CRC and is named", async () => {
    const run = copyRun(path.join(tmp.dir, "two_loops"), "two_loops-flipped");
    const npz = path.join(run, "gradients.npz");
    await flipByteIn(npz, "relu_1_2:1");
    const { res, report } = await validate(run);
    expect(res.exitCode).toBe(1);
    expect(report?.gradients?.corrupted).toEqual(["relu_1_2:1"]);
    expect(report?.gradients?.verdicts.find((v) => v.label === "relu_1_2:1")?.status).toBe(
      "failed",
    );
  });
});

describe("views written in place", () => {
  /** tricky_view_inplace's gradients of views written in place, known by hand (they do not depend
   * on the weights): the column view and its add_ [5, 2, 2], the transpose 3 in row 0 of h, and
   * its mul_ 1 there. */
  const VIEW_GRADIENTS = {
    getitem_1_2: [5, 2, 2],
    add_1_3: [5, 2, 2],
    t_1_6: [3, 0, 0, 3, 0, 0, 3, 0, 0, 3, 0, 0],
    mul_2_7: [1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0],
  };

  test("with the right gradients of its views, a run replays through its view writes", async () => {
    const run = await extractTo("tricky_view_inplace", ["--grads"], "view-right");
    await setGradients(run, VIEW_GRADIENTS);
    const { res, report } = await validate(run);
    expectValid(res, report, readLog(run));
  });

  test("a --grads run of tricky_view_inplace saves its views' gradients as worked out by hand, and validates", async () => {
    const run = await extractTo("tricky_view_inplace", ["--grads"], "view-as-is");
    const check = await python([
      "-c",
      `import json, numpy as np
g = np.load(${JSON.stringify(path.join(run, "gradients.npz"))})
want = json.loads(${JSON.stringify(JSON.stringify(VIEW_GRADIENTS))})
for label, values in want.items():
    assert np.allclose(g[label].reshape(-1), values), (label, g[label])
print("ok")`,
    ]);
    expect(check.stdout.trim()).toBe("ok");
    const { res, report } = await validate(run);
    expectValid(res, report, readLog(run));
  });

  test("a --grads run of multi_io (outputs also used inside the model) validates as extracted", async () => {
    const run = await extractTo("multi_io", ["--grads"]);
    const { res, report } = await validate(run);
    expectValid(res, report, readLog(run));
  });
});
