/** --grads on the CLI side without Python: the flags' parsing and the log's gradient fields from `grad` frames. */
import { readFileSync } from "node:fs";
import { gradRequest, parseTarget } from "../../src/extract/grads.js";
import { buildLog } from "../../src/log/build.js";
import { attachGradients } from "../../src/log/grads.js";
import type { RawRun } from "../../src/log/types.js";
import type { GradRecord, Recorded } from "../../src/store/recorder.js";

function raw(name: string): RawRun {
  return JSON.parse(readFileSync(new URL(`../fixtures/raw/${name}.json`, import.meta.url), "utf8"));
}

describe("--target parsing", () => {
  test.each([
    ["output_1[0, 207]", { output: 1, index: [0, 207] }],
    ["output_2", { output: 2, index: [] }],
    [" output_3[-1] ", { output: 3, index: [-1] }],
    ["output_1[]", { output: 1, index: [] }],
  ])("%j is output and index %j", (text, want) => {
    expect(parseTarget(text)).toEqual(want);
  });

  test.each([
    "output_0[1]",
    "linear_1_1[0]",
    "output_1[0.5]",
    "output_1[a]",
    "output_1[0",
    "out[0]",
  ])("%j is refused, naming the form", (text) => {
    expect(() => parseTarget(text)).toThrow(/is not an output and an index/);
  });
});

describe("gradRequest: the flags' combinations", () => {
  test("no --grads and no gradient flag: no backward pass", () => {
    expect(gradRequest({})).toBeNull();
  });
  test("--grads alone: the sum of the outputs, no parameters", () => {
    expect(gradRequest({ grads: true })).toEqual({
      target: { kind: "sum" },
      request: { target: { kind: "sum" }, params: false },
    });
  });
  test("--target: the log names the output by label, the agent by number", () => {
    const r = gradRequest({ grads: true, target: "output_2[1]", paramGrads: true });
    expect(r?.target).toEqual({ kind: "index", output: "output_2", index: [1] });
    expect(r?.request).toEqual({ target: { kind: "index", output: 2, index: [1] }, params: true });
  });
  test("--grad explicitly on is fine, --no-grad is refused", () => {
    expect(gradRequest({ grads: true, gradMode: true })).not.toBeNull();
    expect(() => gradRequest({ grads: true, gradMode: false })).toThrow(/--no-grad/);
  });
});

describe("attachGradients", () => {
  const recorded = (grads: GradRecord[]): Recorded => ({
    raw: { ...raw("two_loops"), backwardMs: 1.234, targetValue: 2.5 },
    grads,
    bytes: 0,
    firstOpMs: null,
  });
  const g = (id: number, extra: Partial<GradRecord> = {}): GradRecord => ({
    id,
    shape: [1],
    dtype: "float32",
    stored_dtype: "<f4",
    stored_nbytes: 4,
    norm: id / 10,
    ...extra,
  });

  test("a saved pass with a grad frame is saved under its label, one without has status none, an unsaved one null", () => {
    const log = buildLog(raw("two_loops"), (op) => op.id !== 3);
    attachGradients(log, recorded([g(1), g(2), g(-1, { param: "a.weight" })]), { kind: "sum" });
    const byId = new Map(log.passes.map((p) => [p.id, p]));
    expect(byId.get(1)?.grad).toEqual({
      status: "saved",
      array: byId.get(1)?.label,
      shape: [1],
      dtype: "float32",
      stored_dtype: "<f4",
      norm: 0.1,
    });
    expect(byId.get(3)?.grad).toBeNull();
    expect(byId.get(4)?.grad).toEqual({ status: "none" });
    expect(log.gradients).toEqual({
      file: "gradients.npz",
      target: { kind: "sum" },
      value: 2.5,
      num_saved: 2,
      params: [
        { address: "a.weight", array: "param:a.weight", shape: [1], dtype: "float32", norm: -0.1 },
      ],
      backward_ms: 1.2,
    });
  });

  test("a run without --grads keeps gradients null and every pass's grad null", () => {
    const log = buildLog(raw("two_loops"), () => true);
    expect(log.gradients).toBeNull();
    expect(log.passes.every((p) => p.grad === null)).toBe(true);
  });
});
