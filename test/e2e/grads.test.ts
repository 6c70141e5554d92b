/** extract --grads through the real agent (docs/gradients.md): gradients.npz, the log's fields, the flags' errors. */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { RunLog } from "../../src/log/types.js";
import type { Manifest } from "../../src/store/manifest.js";
import { fixture, python, tempDir, torchlens } from "../helpers/cli.js";

const readLog = (run: string) =>
  JSON.parse(readFileSync(path.join(run, "log.json"), "utf8")) as RunLog;

describe("extract --grads", () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());
  const runDir = (name: string) => path.join(tmp.dir, name);
  /** extract MODEL -o RUN --grads FLAGS, which must succeed: the run and its log. */
  async function extractGrads(model: string, name: string, flags: string[] = []) {
    const run = runDir(name);
    const res = await torchlens(["extract", model, "-o", run, "--grads", ...flags]);
    expect(res.stderr).not.toMatch(/error/);
    expect(res.exitCode).toBe(0);
    return { run, log: readLog(run) };
  }

  test("every pass the target depends on has its gradient in gradients.npz under its label, with its norm in the log", async () => {
    const { run, log } = await extractGrads(fixture("branching_mlp.py"), "branching", [
      "--param-grads",
    ]);
    expect(log.schema).toBe("torchlens.log/2");
    expect(log.gradients?.target).toEqual({ kind: "sum" });
    expect(log.gradients?.file).toBe("gradients.npz");
    const saved = log.passes.filter((p) => p.grad?.status === "saved");
    expect(saved.length).toBe(log.gradients?.num_saved);
    expect(saved.length).toBe(log.num_passes); // every pass of this MLP reaches the sum of its output
    const manifest = JSON.parse(readFileSync(path.join(run, "manifest.json"), "utf8")) as Manifest;
    expect(manifest.files.gradients).toBe("gradients.npz");
    expect(manifest.options.grad).toBe(true);
    expect(manifest.options.grads).toEqual({ target: { kind: "sum" }, params: true });
    // numpy reads it as it is; each norm is the array's, the output's gradient is all ones
    const check = await python([
      "-c",
      `import json, numpy as np
log = json.load(open(${JSON.stringify(path.join(run, "log.json"))}))
g = np.load(${JSON.stringify(path.join(run, "gradients.npz"))})
for p in log["passes"]:
    a = g[p["grad"]["array"]]
    assert list(a.shape) == p["shape"], p["label"]
    assert abs(float(np.linalg.norm(a.astype(np.float64))) - p["grad"]["norm"]) < 1e-6 * max(1, p["grad"]["norm"]), p["label"]
assert (g[log["outputs"][0]] == 1).all()
params = [k for k in g.files if k.startswith("param:")]
assert params == ["param:" + q["address"] for q in log["gradients"]["params"]], params
print(len(g.files))`,
    ]);
    expect(check.stderr).toBe("");
    expect(Number(check.stdout.trim())).toBe(log.num_passes + (log.gradients?.params.length ?? 0));
  });

  test("passes the target does not depend on say so (status none) and have no array", async () => {
    const { run, log } = await extractGrads(fixture("multi_io.py"), "noisy-index", [
      "--target",
      "output_1[1]",
    ]);
    expect(log.gradients?.target).toEqual({ kind: "index", output: "output_1", index: [1] });
    const none = log.passes.filter((p) => p.grad?.status === "none").map((p) => p.label);
    expect(none).toContain("output_2"); // the other output does not feed output_1[1]
    const keys = await python([
      "-c",
      `import numpy as np; print(",".join(np.load(${JSON.stringify(path.join(run, "gradients.npz"))}).files))`,
    ]);
    expect(keys.stdout.trim().split(",")).not.toContain("output_2");
  });

  test("--layers selects the gradients saved as it selects the activations", async () => {
    const { log } = await extractGrads(fixture("two_loops.py"), "two-loops-layers", [
      "--layers",
      "tanh",
    ]);
    for (const p of log.passes) {
      if (p.saved) expect(p.grad?.status).toBe("saved");
      else expect(p.grad).toBeNull();
    }
    expect(log.passes.filter((p) => p.grad).map((p) => p.label)).toEqual([
      "tanh_1_4:1",
      "tanh_1_4:2",
    ]);
  });

  test("--loss takes the gradient of the model file's loss function", async () => {
    const model = path.join(tmp.dir, "with_loss.py");
    writeFileSync(
      model,
      [
        "import torch",
        "from torch import nn",
        "def build_model():",
        "    torch.manual_seed(0)",
        "    return nn.Sequential(nn.Linear(3, 2), nn.Tanh())",
        "def example_input():",
        "    return torch.ones(4, 3)",
        "def loss_fn(output, x):",
        "    return (output ** 2).mean()",
        "",
      ].join("\n"),
    );
    const run = runDir("loss");
    const res = await torchlens(["extract", model, "-o", run, "--grads", "--loss", "loss_fn"]);
    expect(res.exitCode).toBe(0);
    const log = readLog(run);
    expect(log.gradients?.target).toEqual({ kind: "loss", function: "loss_fn" });
    // d mean(y^2) / dy = 2y / numel: the output's gradient is its value over 4
    const check = await python([
      "-c",
      `import numpy as np
a = np.load(${JSON.stringify(path.join(run, "activations.npz"))})["output_1"]
g = np.load(${JSON.stringify(path.join(run, "gradients.npz"))})["output_1"]
assert np.allclose(g, 2 * a / a.size), (g, a)
print("ok")`,
    ]);
    expect(check.stdout.trim()).toBe("ok");
    expect(log.gradients?.value).toBeCloseTo(
      Number(
        (
          await python([
            "-c",
            `import numpy as np; a = np.load(${JSON.stringify(path.join(run, "activations.npz"))})["output_1"]; print(float((a.astype(np.float64) ** 2).mean()))`,
          ])
        ).stdout,
      ),
      5,
    );
  });

  test.each([
    [["--target", "output_1[0]"], "--target is only meaningful with --grads"],
    [["--param-grads"], "--param-grads is only meaningful with --grads"],
    [["--grads", "--no-grad"], "--no-grad turns it off"],
    [["--grads", "--target", "output_1[0]", "--loss", "f"], "--target and --loss both"],
    [["--grads", "--target", "linear_1_1[0]"], "is not an output and an index"],
    [["--grads", "--target", "output_1[0, x]"], "is not an output and an index"],
    [["--grads", "--loss", "not a name"], "is not a Python name"],
  ])("extract %j is refused before anything runs: %s", async (flags, words) => {
    const run = runDir(`bad-${flags.join("").replace(/[^a-z0-9]/gi, "_")}`);
    const res = await torchlens(["extract", fixture("branching_mlp.py"), "-o", run, ...flags]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toContain(words);
    expect(res.stderr).toContain("fix:");
    expect(existsSync(run)).toBe(false);
  });

  test.each([
    [["--target", "output_2[0, 0]"], "output_2, but the model returned 1 tensor"],
    [["--target", "output_1[0]"], "a gradient target must be one number"],
    [["--target", "output_1[5, 0]"], "out of range for dimension 0"],
    [["--loss", "missing_fn"], "defines no function 'missing_fn'"],
  ])(
    "a target the model cannot give (%j) is an error naming it, and no run is left",
    async (flags, words) => {
      const run = runDir(`target-${flags.join("").replace(/[^a-z0-9]/gi, "_")}`);
      const res = await torchlens([
        "extract",
        fixture("branching_mlp.py"),
        "-o",
        run,
        "--grads",
        ...flags,
      ]);
      expect(res.exitCode).toBe(2);
      expect(res.stderr).toContain("taking gradients failed");
      expect(res.stderr).toContain(words);
      expect(existsSync(run)).toBe(false);
    },
  );

  test("a model with no differentiable output is refused, naming the fix", async () => {
    const model = path.join(tmp.dir, "ints.py");
    writeFileSync(
      model,
      [
        "import torch",
        "from torch import nn",
        "class M(nn.Module):",
        "    def forward(self, x):",
        "        return x.argmax(dim=1)",
        "def build_model():",
        "    return M()",
        "def example_input():",
        "    return torch.randn(2, 4)",
        "",
      ].join("\n"),
    );
    const run = runDir("ints");
    const res = await torchlens(["extract", model, "-o", run, "--grads"]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toContain("no differentiable output");
    expect(res.stderr).toContain("fix:");
    expect(existsSync(run)).toBe(false);
  });
});
