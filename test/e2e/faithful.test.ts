/**
 * Faithful capture: each fixtures/faithful_*.py is a mechanism by which capture once lost ops or
 * saved the wrong values while validate still said valid (functions held by value, state changed
 * in place, the fused inference path, non-finite values, inputs changed in place), and one a call
 * that capture cannot see, which validate must refuse. Through the real CLI, on whichever torch
 * TORCHLENS_PYTHON has (CI runs this file under torch 1.13 and torch 2.x).
 */
import path from "node:path";
import { fixture, python, tempDir, torchlens } from "../helpers/cli.js";
import {
  expectConnected,
  expectValid,
  extractAndValidate as extractAndValidateTo,
  type Outcome,
} from "../helpers/runs.js";

const tmp = tempDir("torchlens-faithful-");
afterAll(() => tmp.cleanup());

/** extract then validate into tmp/NAME(+flags). */
const extractAndValidate = (name: string, extra: string[] = []): Promise<Outcome> =>
  extractAndValidateTo(
    path.join(tmp.dir, `${name}${extra.join("")}`),
    fixture(`${name}.py`),
    extra,
  );

/** The saved array of a pass, read back with numpy, as a flat list. */
async function savedValues(run: string, key: string): Promise<number[]> {
  const r = await python([
    "-c",
    "import sys, json, numpy as np; a = np.load(sys.argv[1])[sys.argv[2]]; print(json.dumps(a.astype(float).ravel().tolist()))",
    path.join(run, "activations.npz"),
    key,
  ]);
  if (r.exitCode !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

describe("functions the model holds by value are captured", () => {
  let o: Outcome;
  beforeAll(async () => {
    o = await extractAndValidate("faithful_held_functions");
  }, 120_000);

  test("an attribute, a registry, a default argument, a partial, a closure, a class attribute and an unbound Tensor method each record their op", () => {
    const funcs = o.log.passes.map((p) => p.func);
    for (const f of ["gelu", "layer_norm", "tanh", "sigmoid", "exp", "mul", "clamp"])
      expect(funcs).toContain(f);
    expectConnected(o);
  });

  test("the run validates, with every torch call of the forward pass recorded", () => {
    expectValid(o);
    expect(o.report.completeness.checked).toBe(true);
  });
});

describe("a call capture cannot see makes validate fail", () => {
  test("validate exits 1 and names the function and the line that called it", async () => {
    const o = await extractAndValidate("faithful_hidden_call");
    expect(o.validateExit).toBe(1);
    expect(o.report.ok).toBe(false);
    expect(o.report.completeness.ok).toBe(false);
    expect(o.report.completeness.unseen).toEqual([
      expect.objectContaining({
        func: "gelu",
        where: expect.stringMatching(/faithful_hidden_call\.py:19 in forward/),
      }),
    ]);
    const human = await torchlens(["validate", o.run]);
    expect(human.exitCode).toBe(1);
    expect(human.stderr + human.stdout).toMatch(
      /FAIL incomplete: gelu was called once at .*faithful_hidden_call\.py:19/,
    );
  }, 120_000);
});

describe("state changed in place is saved as the op read it", () => {
  let o: Outcome;
  beforeAll(async () => {
    o = await extractAndValidate("faithful_state_in_place");
  }, 120_000);

  test("num_batches_tracked is saved as 0, the value add_ read, not the 1 it wrote", async () => {
    const add = o.log.passes.find((p) => p.func === "add_" && p.module === "bn");
    expect(add).toBeDefined();
    const buffer = o.log.passes.find((p) => p.label === add?.parents[0]);
    expect(buffer?.is_buffer).toBe(true);
    expect(await savedValues(o.run, buffer?.array as string)).toEqual([0]);
    expect(await savedValues(o.run, add?.array as string)).toEqual([1]);
  });

  test("the model's own buffer bumped with += is saved before the bump", async () => {
    const bump = o.log.passes.find((p) => p.func === "__iadd__");
    const buffer = o.log.passes.find((p) => p.label === bump?.parents[0]);
    expect(buffer?.is_buffer).toBe(true);
    expect(await savedValues(o.run, buffer?.array as string)).toEqual([0]);
  });

  test("batch norm's running statistics are saved as batch_norm read them, and the run validates", async () => {
    const bn = o.log.passes.find((p) => p.func === "batch_norm");
    const stats = (bn?.parents ?? []).filter(
      (l) => o.log.passes.find((p) => p.label === l)?.is_buffer,
    );
    expect(stats.length).toBe(2);
    const mean = o.log.passes.find((p) => p.label === stats[0]);
    expect(await savedValues(o.run, mean?.array as string)).toEqual([0, 0, 0, 0]); // running_mean starts at 0
    expectValid(o);
  });
});

describe("the forward pass is the one the user's own code runs", () => {
  test("by default (--no-grad) a padded TransformerEncoder takes torch's fused path, says so, and validates against a no-grad plain pass", async () => {
    const o = await extractAndValidate("faithful_padding_mask");
    expect(o.manifest.options.grad).toBe(false);
    const fused = o.log.passes.filter((p) => p.func === "_transformer_encoder_layer_fwd");
    expect(fused).toHaveLength(2);
    for (const p of fused) expect(p.note).toMatch(/--grad/);
    expectValid(o);
  }, 120_000);

  test("with --grad the same model runs attention op by op, and validates against a plain pass with autograd on", async () => {
    const o = await extractAndValidate("faithful_padding_mask", ["--grad"]);
    expect(o.manifest.options.grad).toBe(true);
    const funcs = new Set(o.log.passes.map((p) => p.func));
    expect(funcs.has("_transformer_encoder_layer_fwd")).toBe(false);
    expect(funcs).toContain("layer_norm");
    expect(funcs).toContain("linear");
    expectValid(o);
  }, 120_000);
});

describe("validate does not fail runs that are right", () => {
  test("an all-NaN parent (log of negatives in a loop) is perturbed with values that can change the child, or exempt with a reason", async () => {
    const o = await extractAndValidate("faithful_non_finite");
    expectValid(o);
    const logs = o.report.verdicts.filter((v) => v.func === "log");
    expect(logs).toHaveLength(3);
    for (const v of logs) expect(v.dependence.map((d) => d.status)).toEqual(["changed"]);
    const sum = o.report.verdicts.find((v) => v.func === "__add__");
    expect(sum?.dependence.map((d) => d.rule)).toContain("non-finite");
  }, 120_000);

  test("a forward that changes its inputs in place is compared with a plain forward on the inputs as given", async () => {
    expectValid(await extractAndValidate("faithful_input_in_place"));
  }, 120_000);
});
