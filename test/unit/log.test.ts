/** The log pipeline (records → passes → loops → labels → layers → modules), fed recorded agent streams. */
import { readFileSync } from "node:fs";
import { addDistances, buildLog, toPasses } from "../../src/log/build.js";
import { labelOps } from "../../src/log/labels.js";
import { groupLayers } from "../../src/log/loops.js";
import type { OpRecord, RawRun, RunLog } from "../../src/log/types.js";

function raw(name: string): RawRun {
  return JSON.parse(readFileSync(new URL(`../fixtures/raw/${name}.json`, import.meta.url), "utf8"));
}
function log(name: string): RunLog {
  return buildLog(raw(name), () => true);
}
/** layer label → pass count, for layers whose passes share a name */
function passCounts(l: RunLog, name: string): number[] {
  return l.layers.filter((x) => x.label.startsWith(`${name}_`)).map((x) => x.num_passes);
}

describe("loops: which ops are passes of one layer", () => {
  test("a loop whose count depends on the data gives its layers exactly the passes it ran", () => {
    const l = log("dynamic_loop");
    const cell = l.layers.filter((x) => x.func === "linear" && x.num_passes > 1);
    expect(cell.map((x) => x.num_passes)).toEqual([3]);
    expect(passCounts(l, "tanh")).toEqual([3]);
    // encode and head linears ran once each: one-pass layers
    expect(passCounts(l, "linear").sort()).toEqual([1, 1, 3]);
  });

  test("a submodule shared by two branches: its ops are two-pass layers, the branch heads are not merged", () => {
    const l = log("shared_branches");
    const shared = l.layers.filter((x) => x.module?.startsWith("shared."));
    expect(shared.map((x) => [x.func, x.num_passes])).toEqual([
      ["linear", 2],
      ["relu", 2],
      ["linear", 2],
    ]);
    expect(passCounts(l, "sigmoid")).toEqual([1]);
    expect(passCounts(l, "tanh")).toEqual([1]);
  });

  test("an LSTM is one pass; a GRU cell stepped in a loop is one layer with a pass per step, and so is the slice feeding it", () => {
    const l = log("lstm_gru");
    expect(passCounts(l, "lstm")).toEqual([1, 1, 1].slice(0, passCounts(l, "lstm").length));
    expect(Math.max(...passCounts(l, "lstm"))).toBe(1);
    expect(passCounts(l, "gru_cell")).toEqual([4]);
    expect(passCounts(l, "getitem")).toEqual([4]);
  });

  test("two loops over different parameters stay two sets of layers; a loop that runs once has one pass", () => {
    const l = log("two_loops");
    expect(passCounts(l, "linear")).toEqual([3, 2, 1]);
    expect(passCounts(l, "relu")).toEqual([3]);
    expect(passCounts(l, "tanh")).toEqual([2]);
    expect(passCounts(l, "sigmoid")).toEqual([1]);
    const once = l.passes.filter((p) => p.func === "sigmoid");
    expect(once.map((p) => p.label)).toEqual(["sigmoid_1_6"]); // no ":1" on a single pass
  });

  test("nested loops: inner ops get a pass per inner step, outer ops a pass per outer step", () => {
    const l = log("nested_loops");
    expect(passCounts(l, "linear")).toEqual([6]);
    expect(passCounts(l, "relu")).toEqual([6]);
    expect(passCounts(l, "mul")).toEqual([2]);
    expect(passCounts(l, "add")).toEqual([2]);
  });

  test("look-alike ops that are not a loop are not merged", () => {
    const l = log("lookalike");
    expect(passCounts(l, "relu")).toEqual([1, 1, 1]);
    expect(l.layers.every((x) => x.num_passes === 1)).toBe(true);
  });

  test("a transformer encoder (different parameters per layer) has no loops; unrelated same-function ops stay apart", () => {
    const l = log("transformer");
    expect(l.layers.every((x) => x.num_passes === 1)).toBe(true);
    expect(l.num_layers).toBe(l.num_passes);
  });

  test("every layer's passes share one function, and pass numbers run 1..n in execution order", () => {
    for (const name of [
      "dynamic_loop",
      "shared_branches",
      "lstm_gru",
      "two_loops",
      "nested_loops",
    ]) {
      const l = log(name);
      const byLabel = new Map(l.passes.map((p) => [p.label, p]));
      for (const layer of l.layers) {
        const ps = layer.passes.map((x) => byLabel.get(x));
        expect(new Set(ps.map((p) => p?.func)).size).toBe(1);
        expect(ps.map((p) => p?.pass)).toEqual(ps.map((_, i) => i + 1));
        const ids = ps.map((p) => p?.id ?? 0);
        expect([...ids].sort((a, b) => a - b)).toEqual(ids);
      }
    }
  });

  test("ops using the same parameters are one layer even when nothing else recurs", () => {
    const ops: OpRecord[] = [1, 2].map((id) => ({
      id,
      kind: "op",
      func: "linear",
      name: "linear",
      qualname: "torch.nn.functional.linear",
      call: id,
      out_index: null,
      parents: id === 2 ? [[1, "0"]] : [],
      args: {},
      params: ["fc.weight"],
      modules: [["fc", id]],
      shape: [2],
      dtype: "float32",
      device: "cpu",
      stored_dtype: null,
      inplace: false,
      time_ms: 0,
      stored_nbytes: 0,
    }));
    expect(groupLayers(ops)).toEqual([0, 0]);
  });
});

describe("labels", () => {
  test("labels follow {name}_{index among that name}_{index among op layers}, with :pass for loops", () => {
    expect(log("two_loops").passes.map((p) => p.label)).toEqual([
      "input_1",
      "linear_1_1:1",
      "relu_1_2:1",
      "linear_1_1:2",
      "relu_1_2:2",
      "linear_1_1:3",
      "relu_1_2:3",
      "linear_2_3:1",
      "tanh_1_4:1",
      "linear_2_3:2",
      "tanh_1_4:2",
      "linear_3_5",
      "sigmoid_1_6",
      "output_1",
    ]);
  });

  test("sources count on their own: input_N, buffer_N, output_N", () => {
    const l = log("cnn");
    expect(l.passes.filter((p) => p.is_buffer).map((p) => p.label)).toEqual([
      "buffer_1",
      "buffer_2",
      "buffer_3",
      "buffer_4",
    ]);
    expect(l.inputs).toEqual(["input_1"]);
    expect(l.outputs).toEqual(["output_1"]);
    expect(l.passes.find((p) => p.func === "conv2d")?.label).toBe("conv2d_1_1");
  });

  test("labels are stable: records built from a copy in reversed key order give the same labels", () => {
    const reordered = (v: unknown): unknown =>
      Array.isArray(v)
        ? v.map(reordered)
        : v && typeof v === "object"
          ? Object.fromEntries(
              Object.entries(v)
                .reverse()
                .map(([k, x]) => [k, reordered(x)]),
            )
          : v;
    const copy = buildLog(reordered(raw("nested_loops")) as RawRun, () => true);
    expect(copy.passes.map((p) => p.label)).toEqual(log("nested_loops").passes.map((p) => p.label));
    expect(copy.passes.map((p) => p.label)).toContain("linear_1_1:1");
  });

  test("labelOps numbers layers by their first pass, whatever the layer keys are", () => {
    const ops = raw("two_loops").ops.slice(0, 3);
    const { label } = labelOps(ops, [7, 3, 3]);
    expect(label).toEqual(["input_1", "linear_1_1:1", "linear_1_1:2"]);
  });
});

describe("graph facts", () => {
  test("distances count edges from the nearest input and to the nearest output", () => {
    const l = log("lookalike");
    expect(l.passes.map((p) => p.distance_from_input)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(l.passes.map((p) => p.distance_to_output)).toEqual([6, 5, 4, 3, 2, 1, 0]);
  });

  test("dead ends are passes that never reach an output; branch points have several children", () => {
    const l = log("dynamic_loop");
    const dead = new Set(
      l.passes.filter((p) => p.is_dead_end).map((p) => p.layer.replace(/_\d+_\d+$/, "")),
    );
    expect([...dead].sort()).toEqual(["frobenius_norm", "gt", "lt", "sum"]); // loop/if conditions feed Python, not the output
    expect(l.passes.filter((p) => p.is_branch_point).length).toBeGreaterThan(0);
    for (const p of l.passes) expect(p.is_branch_point).toBe(p.children.length > 1);
  });

  test("toPasses rejects a record naming a parent the agent never sent", () => {
    const r = raw("lookalike");
    r.ops[2].parents = [[999, "0"]];
    expect(() =>
      toPasses(
        r,
        r.ops.map((_, i) => i),
        () => false,
      ),
    ).toThrow(/999/);
  });

  test("addDistances leaves unreachable passes null", () => {
    const r = raw("noisy");
    const passes = toPasses(
      r,
      r.ops.map((_, i) => i),
      () => false,
    );
    addDistances(passes);
    const internal = passes.filter((p) => p.kind === "internal");
    for (const p of internal) expect(p.distance_from_input).toBeNull();
  });
});

describe("modules", () => {
  test("every module call is listed with its label, parent call, inputs, outputs and what ran inside", () => {
    const l = log("shared_branches");
    const shared = l.modules.find((m) => m.address === "shared");
    expect(shared?.calls.map((c) => c.label)).toEqual(["shared:1", "shared:2"]);
    expect(shared?.calls.every((c) => c.parent === ":1")).toBe(true);
    expect(shared?.calls[0].num_passes).toBe(3);
    expect(shared?.num_calls).toBe(2);
    const inner = l.modules.find((m) => m.address === "shared.0");
    expect(inner?.calls.map((c) => c.parent)).toEqual(["shared:1", "shared:2"]);
    expect(shared?.children).toEqual(["shared.0", "shared.1", "shared.2"]);
    expect(shared?.calls[0].outputs).toHaveLength(1);
  });

  test("module parameters are listed with counts; the model's total is their sum", () => {
    const l = log("cnn");
    const total = l.modules.reduce((s, m) => s + m.num_params, 0);
    expect(l.model.num_params).toBe(total);
    expect(l.modules.find((m) => m.params.length)?.params[0]).toHaveProperty("numel");
  });
});
