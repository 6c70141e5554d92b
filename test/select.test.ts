/** Selection: --layers on extract (through the real agent), and the selector rules on recorded logs. */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { buildLog } from "../src/log/build.js";
import {
  closeMatches,
  matchSelector,
  planSelection,
  selectPasses,
  splitSelectors,
} from "../src/log/select.js";
import type { RawRun, RunLog } from "../src/log/types.js";
import { fixture, tempDir, torchlens } from "./helpers/cli.js";

function recorded(name: string): RunLog {
  const raw: RawRun = JSON.parse(
    readFileSync(new URL(`./fixtures/raw/${name}.json`, import.meta.url), "utf8"),
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
    try {
      selectPasses(loops, ["linera_1_1"]);
    } catch (err) {
      expect((err as { exitCode: number }).exitCode).toBe(2);
    }
  });

  test("closeMatches ranks by edit distance, prefixes first", () => {
    expect(closeMatches("relu", ["relu_1_2", "gelu", "linear"], 2)).toEqual(["relu_1_2", "gelu"]);
    expect(closeMatches("tahn", ["tanh", "a", "input_1"])).toEqual(["tanh"]);
  });

  test("splitSelectors splits on commas and refuses an empty list", () => {
    expect(splitSelectors(["a,b", "c"])).toEqual(["a", "b", "c"]);
    expect(() => splitSelectors(" , ")).toThrow(/no selectors/);
  });

  test("planSelection: names, dotted addresses and non-negative ordinals are decided by the agent; labels, globs, -1, @out need a dry pass", () => {
    expect(planSelection(["linear", "encoder.layers.0", "3"])).toEqual({
      agent: { words: ["linear"], modules: ["encoder.layers.0"], ordinals: [3] },
    });
    for (const s of ["relu_1_2", "relu_1_2:2", "conv2d_*", "-1", "features@out", "a:2"])
      expect(planSelection([s])).toEqual({ needsLabels: true });
  });
});

describe("extract --layers through the real agent", () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  async function extractWith(selectors: string, name = "two_loops") {
    const run = path.join(tmp.dir, `${name}-${selectors.replace(/[^a-z0-9]/gi, "_")}`);
    const res = await torchlens([
      "extract",
      fixture(`${name}.py`),
      "-o",
      run,
      "--layers",
      selectors,
      "--json",
    ]);
    return {
      res,
      run,
      log:
        res.exitCode === 0
          ? (JSON.parse(readFileSync(path.join(run, "log.json"), "utf8")) as RunLog)
          : null,
    };
  }
  const saved = (log: RunLog | null) => log?.passes.filter((p) => p.saved).map((p) => p.label);

  test.each([
    ["tanh", 1, ["tanh_1_4:1", "tanh_1_4:2"]],
    ["c", 1, ["linear_3_5"]],
    ["2", 1, ["relu_1_2:1"]],
    ["relu_1_2:2", 2, ["relu_1_2:2"]],
    ["linear_2", 2, ["linear_2_3:1", "linear_2_3:2"]],
    ["-1", 2, ["output_1"]],
    ["sigmoid_*", 2, ["sigmoid_1_6"]],
    ["b@out", 2, ["linear_2_3:1", "linear_2_3:2"]],
  ])(
    "--layers %s saves exactly its passes (%i forward pass(es)), and the log still lists every pass",
    async (selectors, forwardPasses, labels) => {
      const { res, run, log } = await extractWith(selectors);
      expect(res.exitCode).toBe(0);
      expect(JSON.parse(res.stdout).forward_passes).toBe(forwardPasses);
      expect(saved(log)).toEqual(labels);
      expect(log?.num_passes).toBe(14);
      for (const p of log?.passes ?? []) expect(p.array === null).toBe(!p.saved);
      const { python } = await import("./helpers/cli.js");
      const keys = await python([
        "-c",
        `import numpy as np; print(",".join(sorted(np.load(${JSON.stringify(path.join(run, "activations.npz"))}).files)))`,
      ]);
      expect(keys.stdout.trim()).toBe([...labels].sort().join(","));
    },
  );

  test("a selector matching nothing fails with exit 2, close matches, and no run left behind", async () => {
    const { res, run } = await extractWith("tahn");
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/close: tanh/);
    expect(() => readFileSync(path.join(run, "manifest.json"))).toThrow();
  });

  test("label selectors on a model that is not deterministic fail clearly instead of saving the wrong passes", async () => {
    const counter = path.join(tmp.dir, "counter.txt");
    writeFileSync(counter, "0");
    const model = path.join(tmp.dir, "flaky.py");
    writeFileSync(
      model,
      [
        "import torch",
        "from torch import nn",
        `COUNTER = ${JSON.stringify(counter)}`,
        "class Flaky(nn.Module):",
        "    def forward(self, x):",
        "        n = int(open(COUNTER).read()) + 1",
        "        open(COUNTER, 'w').write(str(n))",
        "        for _ in range(n):",
        "            x = torch.relu(x) + 1",
        "        return x",
        "def build_model():",
        "    return Flaky()",
      ].join("\n"),
    );
    const res = await torchlens([
      "extract",
      model,
      "--input-shape",
      "3",
      "-o",
      path.join(tmp.dir, "flaky_run"),
      "--layers",
      "relu_1_1",
    ]);
    expect(res.exitCode).toBe(1);
    expect(res.stderr).toMatch(/not deterministic/);
  });
});
