/** Selection: the selector rules on recorded logs. */
import { readFileSync } from "node:fs";
import { buildLog } from "../../src/log/build.js";
import {
  type AgentSelection,
  matchSelector,
  planSelection,
  selectPasses,
  splitSelectors,
} from "../../src/log/select.js";
import type { RawRun, RunLog } from "../../src/log/types.js";

function recorded(name: string): RunLog {
  const raw: RawRun = JSON.parse(
    readFileSync(new URL(`../fixtures/raw/${name}.json`, import.meta.url), "utf8"),
  );
  return buildLog(raw, () => true);
}

describe("selectors on a recorded log", () => {
  const cnn = recorded("cnn");
  const loops = recorded("two_loops");

  test.each([
    ["relu_1_2:2", "pass", ["relu_1_2:2"]],
    ["relu_1_2", "layer", ["relu_1_2:1", "relu_1_2:2", "relu_1_2:3"]],
    ["linear_2", "short", ["linear_2_3:1", "linear_2_3:2"]],
    ["tanh", "function", ["tanh_1_4:1", "tanh_1_4:2"]],
    ["0", "ordinal", ["input_1"]],
    ["-1", "ordinal", ["output_1"]],
    ["linear_1_1:*", "glob", ["linear_1_1:1", "linear_1_1:2", "linear_1_1:3"]],
    ["c", "module", ["linear_3_5"]],
    ["a:2", "call", ["linear_1_1:2"]],
    ["b@out", "outputs", ["linear_2_3:1", "linear_2_3:2"]],
    ["b:2@out", "outputs", ["linear_2_3:2"]],
  ])("%s is a %s selector", (selector, kind, labels) => {
    const m = matchSelector(loops, selector);
    expect(m?.kind).toBe(kind);
    expect(m?.labels).toEqual(labels);
  });

  test("a module address selects every pass inside it, nested modules included", () => {
    const m = matchSelector(cnn, "features");
    expect(m?.kind).toBe("module");
    expect(m?.labels.length).toBeGreaterThan(8);
    expect(
      m?.labels.every((l) =>
        cnn.passes.find((p) => p.label === l)?.modules.some((x) => x.startsWith("features")),
      ),
    ).toBe(true);
  });

  test("several selectors give the union, in execution order", () => {
    expect(selectPasses(loops, ["-1", "0", "tanh"]).labels).toEqual([
      "input_1",
      "tanh_1_4:1",
      "tanh_1_4:2",
      "output_1",
    ]);
  });

  test("a selector matching nothing is a usage error that lists close matches", () => {
    expect(() => selectPasses(loops, ["tahn"])).toThrow(/tahn.*close: tanh\b/);
    expect(() => selectPasses(loops, ["linera_1_1"])).toThrow(
      expect.objectContaining({ exitCode: 2 }),
    );
  });

  test("splitSelectors splits on commas and refuses an empty list", () => {
    expect(splitSelectors(["a,b", "c"])).toEqual(["a", "b", "c"]);
    expect(() => splitSelectors(" , ")).toThrow(/no selectors/);
  });

  test("planSelection: names, dotted addresses and non-negative ordinals are decided by the agent; labels, globs, -1, @out need a dry run", () => {
    expect(planSelection(["linear", "encoder.layers.0", "3"])).toEqual({
      agent: { words: ["linear"], modules: ["encoder.layers.0"], ordinals: [3] },
    });
    for (const s of ["relu_1_2", "relu_1_2:2", "conv2d_*", "-1", "features@out", "a:2"])
      expect(planSelection([s])).toEqual({ needsLabels: true });
  });
});

describe("the selector table shared with the agent (test/fixtures/selection.json)", () => {
  const table: {
    cases: {
      run: string;
      selectors: string[];
      agent: AgentSelection | null;
      labels: string[];
      ids: number[];
    }[];
  } = JSON.parse(readFileSync(new URL("../fixtures/selection.json", import.meta.url), "utf8"));
  const logs = new Map<string, RunLog>();
  const logOf = (run: string): RunLog => {
    const log = logs.get(run) ?? recorded(run);
    logs.set(run, log);
    return log;
  };

  test.each(table.cases.map((c) => [c.selectors.join(","), c.run, c] as const))(
    "--layers %s on %s: the CLI plans it as the table says and selects exactly its passes",
    (_, run, c) => {
      expect(planSelection(c.selectors)).toEqual(
        c.agent ? { agent: c.agent } : { needsLabels: true },
      );
      const log = logOf(run);
      const { labels } = selectPasses(log, c.selectors);
      expect(labels).toEqual(c.labels);
      expect(labels.map((l) => log.passes.find((p) => p.label === l)?.id)).toEqual(c.ids);
    },
  );
});
