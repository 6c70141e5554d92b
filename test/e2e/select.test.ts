/** extract --layers through the real agent: the selectors the agent decides and those that need a dry run. */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { RunLog } from "../../src/log/types.js";
import { fixture, python, tempDir, torchlens } from "../helpers/cli.js";

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
      const summary = JSON.parse(res.stdout);
      expect(summary.forwards).toBe(forwardPasses);
      expect(summary.forward_passes).toBe(forwardPasses); // the old name, kept for one release
      expect(saved(log)).toEqual(labels);
      expect(log?.num_passes).toBe(14);
      for (const p of log?.passes ?? []) expect(p.array === null).toBe(!p.saved);
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
