/**
 * `torchlens dataset` through the real CLI and agent: rows equal the model's own outputs, resume
 * after a kill, shards into the same files byte for byte, one dataset per directory, the options,
 * and bad input. Stimuli are generated (test/helpers/make_stimuli.py).
 */
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { BIN, fixture, PYTHON, python, ROOT, tempDir, torchlens } from "../helpers/cli.js";
import { doneCount, json, layerHashes } from "../helpers/dataset.js";

const tmp = tempDir("torchlens-dataset-");
afterAll(() => tmp.cleanup());
const at = (...p: string[]) => path.join(tmp.dir, ...p);
const MAKE = path.join(ROOT, "test/helpers/make_stimuli.py");
const CNN = fixture("cnn.py");
const LAYERS = ["--layers", "relu,linear"];
/** `torchlens dataset` of the bundled CNN over the 40 .npy stimuli into `out`. */
const onNpy = (out: string, ...flags: string[]) =>
  torchlens(["dataset", CNN, at("stim.npy"), "-o", out, ...flags]);
/** The .npy case's command: those stimuli at batch 16, the LAYERS. */
const npyDataset = (out: string, ...extra: string[]) =>
  onNpy(out, ...LAYERS, "--batch-size", "16", ...extra);

async function make(...args: string[]): Promise<void> {
  const res = await python([MAKE, ...args]);
  if (res.exitCode !== 0) throw new Error(`make_stimuli ${args.join(" ")}: ${res.stderr}`);
}

/** Image stimuli need Pillow, which the torch 2 environment lacks: those cases skip there. */
const HAS_PIL = (await python(["-c", "import PIL"])).exitCode === 0;

/** numpy, by a script on stdin-free argv: prints what `code` prints. */
async function py(code: string): Promise<string> {
  const res = await python(["-c", code]);
  if (res.exitCode !== 0) throw new Error(res.stderr);
  return res.stdout.trim();
}

beforeAll(async () => {
  await make("npy", at("stim.npy"), "40");
});

describe("dataset over a .npy array: one N × … matrix per selected pass", () => {
  const out = at("full");
  let res: Awaited<ReturnType<typeof torchlens>>;
  beforeAll(async () => {
    res = await npyDataset(out, "--json");
  }, 120_000);

  test("it succeeds and says the dataset is complete", () => {
    expect(res.stderr).toBe("");
    expect(res.exitCode).toBe(0);
    const summary = JSON.parse(res.stdout);
    expect(summary).toMatchObject({
      stimuli: 40,
      layers: 5,
      complete: true,
      batches: { shard: 3, ran: 3, skipped: 0 },
    });
    expect(json(path.join(out, "manifest.json"))).toMatchObject({
      status: "complete",
      batches: { count: 3, done: 3 },
    });
  });

  test("index.json lists each selected pass with its file, shape [N, ...] and the probe's layer log", () => {
    const index = json(path.join(out, "index.json"));
    expect(index.format).toBe("torchlens.dataset/1");
    expect(index.layers.map((l: { label: string }) => l.label)).toEqual(
      index.log.passes
        .filter((p: { saved: boolean }) => p.saved)
        .map((p: { label: string }) => p.label),
    );
    for (const layer of index.layers) {
      expect(layer.shape[0]).toBe(40);
      expect(layer.shape.slice(1)).toEqual(layer.pass_shape);
      expect(existsSync(path.join(out, layer.file))).toBe(true);
    }
    expect(readFileSync(path.join(out, "stimuli.txt"), "utf8")).toBe(
      `${Array.from({ length: 40 }, (_, i) => String(i)).join("\n")}\n`,
    );
  });

  test("each row equals the model's own output for that stimulus (forward hooks in plain torch)", async () => {
    const index = json(path.join(out, "index.json"));
    const linear = index.layers.filter((l: { func: string }) => l.func === "linear");
    const relu = index.layers.filter((l: { func: string }) => l.func === "relu");
    expect(linear.length).toBe(2);
    expect(relu.length).toBe(3);
    const code = `
import sys, importlib.util, numpy as np, torch
sys.path.insert(0, ${JSON.stringify(path.dirname(CNN))})
import cnn
m = cnn.build_model()
x = torch.from_numpy(np.load(${JSON.stringify(at("stim.npy"))}))
outs = []
m.classifier[2].register_forward_hook(lambda mod, i, o: outs.append(o))
m.classifier[4].register_forward_hook(lambda mod, i, o: outs.append(o))
with torch.no_grad():
    m(x)
a = np.load(${JSON.stringify(path.join(out, linear[0].file))}, mmap_mode="r")
b = np.load(${JSON.stringify(path.join(out, linear[1].file))}, mmap_mode="r")
import json
print(json.dumps([a.shape, b.shape, float(np.abs(a - outs[0].numpy()).max()), float(np.abs(b - outs[1].numpy()).max())]))
`;
    const [a, b, da, db] = JSON.parse(await py(code));
    expect([a, b]).toEqual([
      [40, 32],
      [40, 10],
    ]);
    expect(Math.max(da, db)).toBeLessThan(1e-4);
  }, 60_000);

  test("a rerun of the same command runs nothing and changes nothing", async () => {
    const before = layerHashes(out);
    const again = await npyDataset(out, "--json");
    expect(again.exitCode).toBe(0);
    expect(JSON.parse(again.stdout).batches).toEqual({ shard: 3, ran: 0, skipped: 3 });
    expect(layerHashes(out)).toEqual(before);
  }, 60_000);

  test("--check re-extracts stimuli one at a time through extract and finds the rows equal", async () => {
    const again = await npyDataset(out, "--check", "3", "--json");
    expect(again.exitCode).toBe(0);
    expect(JSON.parse(again.stdout).check).toMatchObject({ stimuli: 3, layers: 5 });
  }, 120_000);

  test("validate DIR re-extracts stimuli of a dataset and fails (exit 1) on a row that was changed", async () => {
    const ok = await torchlens(["validate", out, "--sample", "2"]);
    expect(ok.exitCode).toBe(0);
    expect(ok.stderr).toMatch(/2 stimuli × 5 layers re-extracted one at a time match their rows/);
    const copy = at("tampered");
    cpSync(out, copy, { recursive: true });
    const index = json(path.join(copy, "index.json"));
    const file = path.join(copy, index.layers[4].file);
    await py(
      `import numpy as np; a = np.load(${JSON.stringify(file)}, mmap_mode="r+"); a[:] += 1; a.flush()`,
    );
    const bad = await torchlens(["validate", copy, "--sample", "2"]);
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toMatch(/rows differ from extract beyond the tolerance/);
    expect(bad.stderr).toContain(index.layers[4].label);
  }, 120_000);

  test("a second model, other options or other stimuli in the same directory are refused and nothing changes", async () => {
    const before = layerHashes(out);
    const other = await torchlens([
      "dataset",
      fixture("branching_mlp.py"),
      at("stim.npy"),
      "-o",
      out,
      ...LAYERS,
    ]);
    expect(other.exitCode).toBe(2);
    expect(other.stderr).toMatch(/holds another dataset: the model file differs/);
    const dtype = await npyDataset(out, "--dtype", "float16");
    expect(dtype.exitCode).toBe(2);
    expect(dtype.stderr).toMatch(/--dtype null, and this command gives "float16"/);
    await make("npy", at("stim50.npy"), "50");
    const stimuli = await torchlens([
      "dataset",
      CNN,
      at("stim50.npy"),
      "-o",
      out,
      ...LAYERS,
      "--batch-size",
      "16",
    ]);
    expect(stimuli.exitCode).toBe(2);
    expect(stimuli.stderr).toMatch(/made from 40 stimuli, and there are 50 now/);
    expect(layerHashes(out)).toEqual(before);
  }, 120_000);

  test("status says every shard and batch is done", async () => {
    const st = await torchlens(["dataset", "status", out, "--json"]);
    expect(st.exitCode).toBe(0);
    const s = JSON.parse(st.stdout);
    expect(s).toMatchObject({ complete: true, batches: { count: 3, done: 3, todo: "" } });
    expect(s.shards.map((r: { state: string }) => r.state)).toEqual(["done"]);
    const text = await torchlens(["dataset", "status", out]);
    expect(text.stdout).toMatch(/3 of 3 batches done — complete/);
  }, 30_000);

  test("three shards started at once write the same files, byte for byte", async () => {
    const sharded = at("sharded");
    const runs = await Promise.all(
      ["1/3", "2/3", "3/3"].map((s) => npyDataset(sharded, "--shard", s, "--json")),
    );
    for (const r of runs) expect(r.exitCode).toBe(0);
    expect(runs.filter((r) => JSON.parse(r.stdout).prepared).length).toBe(1);
    expect(
      JSON.parse(runs.map((r) => r.stdout).find((o) => JSON.parse(o).complete) ?? "{}").complete,
    ).toBe(true);
    expect(layerHashes(sharded)).toEqual(layerHashes(out));
    expect(readdirSync(tmp.dir).filter((n) => n.includes(".preparing-"))).toEqual([]);
  }, 180_000);
});

describe("dataset options shape the rows", () => {
  test("--pool mean --dtype float16 gives N × C float16 rows equal to the spatial mean", async () => {
    const out = at("pooled");
    const res = await onNpy(
      out,
      "--layers",
      "relu_1_3",
      "--pool",
      "mean",
      "--dtype",
      "float16",
      "--batch-size",
      "8",
    );
    expect(res.exitCode).toBe(0);
    const index = json(path.join(out, "index.json"));
    expect(index.layers[0]).toMatchObject({
      shape: [40, 8],
      dtype: "float16",
      descr: "<f2",
      pool: "mean",
      pass_shape: [8, 32, 32],
    });
    const code = `
import sys, numpy as np, torch
sys.path.insert(0, ${JSON.stringify(path.dirname(CNN))})
import cnn
m = cnn.build_model()
x = torch.from_numpy(np.load(${JSON.stringify(at("stim.npy"))}))
with torch.no_grad():
    ref = m.features[:3](x).mean(dim=(2, 3)).numpy()
a = np.load(${JSON.stringify(path.join(out, index.layers[0].file))})
print(a.dtype, float(np.abs(a.astype(np.float32) - ref).max() / np.abs(ref).max()))
`;
    const [dtype, rel] = (await py(code)).split(" ");
    expect(dtype).toBe("float16");
    expect(Number(rel)).toBeLessThan(2e-3);
  }, 120_000);

  test("--flatten gives one vector per stimulus", async () => {
    const out = at("flat");
    const res = await onNpy(out, "--layers", "features.3@out", "--flatten", "--batch-size", "20");
    expect(res.exitCode).toBe(0);
    expect(json(path.join(out, "index.json")).layers[0].shape).toEqual([40, 8 * 16 * 16]);
  }, 120_000);

  test("the model file's stimuli() gives the stimuli and their ids", async () => {
    const file = at("hooked.py");
    writeFileSync(
      file,
      `import sys\nsys.path.insert(0, ${JSON.stringify(path.dirname(CNN))})\nimport torch\nfrom cnn import build_model\n\ndef stimuli():\n    g = torch.Generator().manual_seed(1)\n    for i in range(10):\n        yield f"s{i}", torch.randn(3, 32, 32, generator=g)\n`,
    );
    const out = at("hooked");
    const res = await torchlens([
      "dataset",
      file,
      "-o",
      out,
      "--layers",
      "linear",
      "--batch-size",
      "4",
    ]);
    expect(res.stderr).toMatch(/complete/);
    expect(res.exitCode).toBe(0);
    expect(readFileSync(path.join(out, "stimuli.txt"), "utf8")).toBe(
      `${Array.from({ length: 10 }, (_, i) => `s${i}`).join("\n")}\n`,
    );
  }, 120_000);
});

describe("interrupted datasets never look complete and resume where they stopped", () => {
  /** The CNN slowed to 0.15 s a forward (slow.py, written by the first test), batch 2: 20 batches. */
  const slowArgs = (out: string) => [
    BIN,
    "dataset",
    at("slow.py"),
    at("stim.npy"),
    "-o",
    out,
    ...LAYERS,
    "--batch-size",
    "2",
    "--workers",
    "0",
  ];
  const startSlow = (out: string) =>
    spawn("node", slowArgs(out), {
      env: { ...process.env, TORCHLENS_PYTHON: PYTHON },
      stdio: "ignore",
    });

  test("a task killed outright (SIGKILL) is shown interrupted; the rerun completes with the same bytes", async () => {
    const slow = at("slow.py");
    writeFileSync(
      slow,
      `import sys, time\nsys.path.insert(0, ${JSON.stringify(path.dirname(CNN))})\nfrom cnn import build_model as _base\n\ndef build_model():\n    m = _base()\n    m.register_forward_hook(lambda *a: time.sleep(0.15))\n    return m\n`,
    );
    const out = at("killed");
    const args = slowArgs(out);
    const child = startSlow(out);
    const record = path.join(out, "progress/shard-0001-of-0001.json");
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (existsSync(record) && doneCount(record) >= 3) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
    const done = doneCount(record);
    expect(done).toBeGreaterThanOrEqual(3);
    expect(done).toBeLessThan(20);
    expect(json(path.join(out, "manifest.json")).status).toBe("incomplete");
    const st = JSON.parse((await torchlens(["dataset", "status", out, "--json"])).stdout);
    expect(st.complete).toBe(false);
    expect(st.shards[0]).toMatchObject({ state: "interrupted" });
    const again = await torchlens([...args.slice(1), "--json"]);
    expect(again.exitCode).toBe(0);
    const summary = JSON.parse(again.stdout);
    expect(summary.complete).toBe(true);
    expect(summary.batches.skipped).toBeGreaterThanOrEqual(done);
    const whole = at("unkilled");
    expect((await torchlens(slowArgs(whole).slice(1))).exitCode).toBe(0);
    expect(layerHashes(out)).toEqual(layerHashes(whole));
  }, 180_000);

  test("SIGTERM records the task as interrupted", async () => {
    const out = at("termed");
    const child = startSlow(out);
    const record = path.join(out, "progress/shard-0001-of-0001.json");
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && !(existsSync(record) && doneCount(record) >= 1))
      await new Promise((r) => setTimeout(r, 50));
    child.kill("SIGTERM");
    const code = await new Promise((r) => child.on("exit", (c) => r(c)));
    expect(code).toBe(143);
    expect(json(record).state).toBe("interrupted");
    expect(json(path.join(out, "manifest.json")).status).toBe("incomplete");
  }, 120_000);
});

describe("bad input: a clear error, a non-zero exit, nothing already written lost", () => {
  test("a selector that matches nothing names close matches (exit 2) and leaves no output", async () => {
    const out = at("nomatch");
    const res = await onNpy(out, "--layers", "conv9d");
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/matches no pass/);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(tmp.dir).filter((n) => n.startsWith(".nomatch"))).toEqual([]);
  }, 60_000);

  test("a shard outside 1..N is refused before anything starts", async () => {
    const res = await onNpy(at("badshard"), ...LAYERS, "--shard", "5/3");
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/shard 5 is outside 1\.\.3/);
  });

  test("no --layers, no -o, or an output that is another kind of directory are usage errors", async () => {
    expect(
      (await torchlens(["dataset", CNN, at("stim.npy"), "-o", at("nolayers")])).stderr,
    ).toMatch(/needs --layers/);
    expect((await torchlens(["dataset", CNN, at("stim.npy"), ...LAYERS])).stderr).toMatch(
      /needs -o DIR/,
    );
    const res = await onNpy(path.join(ROOT, "fixtures"), ...LAYERS);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/not a torchlens dataset/);
  }, 60_000);

  test("a selected pass without a batch dimension is refused with the reason", async () => {
    const file = at("nobatch.py");
    writeFileSync(
      file,
      "import torch\nfrom torch import nn\n\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(4, 2)\n    def forward(self, x):\n        return self.lin(x.flatten(1)).sum()\n\ndef build_model():\n    return M().eval()\n",
    );
    await make("npy", at("vec.npy"), "6", "4", "1", "1");
    const res = await torchlens([
      "dataset",
      file,
      at("vec.npy"),
      "-o",
      at("nobatch"),
      "--layers",
      "sum",
    ]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/has no batch dimension/);
  }, 60_000);
});

(HAS_PIL ? describe : describe.skip)("image folders (need Pillow)", () => {
  test("a nested folder of PNG and JPEG images, in sorted path order, with --preset imagenet", async () => {
    await make("images", at("imgs"), "12", "--nested", "--mixed");
    const out = at("imgs-out");
    const res = await torchlens([
      "dataset",
      CNN,
      at("imgs"),
      "-o",
      out,
      "--layers",
      "linear",
      "--preset",
      "imagenet",
      "--size",
      "32",
      "--batch-size",
      "5",
      "--workers",
      "2",
    ]);
    expect(res.exitCode).toBe(0);
    const ids = readFileSync(path.join(out, "stimuli.txt"), "utf8").trim().split("\n");
    expect(ids).toEqual([...ids].sort());
    expect(ids[0]).toBe("set0/img_0000.png");
    expect(ids.length).toBe(12);
  }, 120_000);

  test("images of mixed sizes without a preset name two of them (exit 2)", async () => {
    const res = await torchlens([
      "dataset",
      CNN,
      at("imgs"),
      "-o",
      at("mixed-out"),
      "--layers",
      "linear",
      "--batch-size",
      "12",
    ]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/different shapes/);
    expect(res.stderr).toMatch(/--preset imagenet|transform/);
  }, 60_000);

  test("a truncated image is named with its path; --skip-bad records it and its rows are NaN", async () => {
    await make("images", at("trunc"), "9", "--truncated", "4");
    const res = await torchlens([
      "dataset",
      CNN,
      at("trunc"),
      "-o",
      at("trunc-out"),
      "--layers",
      "linear",
      "--batch-size",
      "4",
    ]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/img_0004\.png/);
    expect(res.stderr).toMatch(/--skip-bad/);
    const skipped = await torchlens([
      "dataset",
      CNN,
      at("trunc"),
      "-o",
      at("trunc-skip"),
      "--layers",
      "linear",
      "--batch-size",
      "4",
      "--skip-bad",
      "--json",
    ]);
    expect(skipped.exitCode).toBe(0);
    expect(JSON.parse(skipped.stdout)).toMatchObject({ complete: true, bad: 1 });
    const manifest = json(path.join(at("trunc-skip"), "manifest.json"));
    expect(manifest.bad).toEqual([expect.objectContaining({ row: 4, id: "img_0004.png" })]);
    const index = json(path.join(at("trunc-skip"), "index.json"));
    const nan = await py(
      `import numpy as np; a = np.load(${JSON.stringify(path.join(at("trunc-skip"), index.layers[0].file))}); print(np.isnan(a[4]).all(), np.isnan(a[3]).any())`,
    );
    expect(nan).toBe("True False");
  }, 120_000);

  test("an empty folder is an error that says what stimuli can be (exit 2)", async () => {
    const empty = at("empty");
    mkdirSync(empty);
    const res = await torchlens([
      "dataset",
      CNN,
      empty,
      "-o",
      at("empty-out"),
      "--layers",
      "linear",
    ]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/no stimuli/);
  }, 60_000);

  test("a model whose graph depends on the stimulus names the stimulus that changed it", async () => {
    await make("images", at("bright"), "10", "--bright", "7");
    const res = await torchlens([
      "dataset",
      fixture("dataset_dynamic.py"),
      at("bright"),
      "-o",
      at("bright-out"),
      "--layers",
      "conv2d",
      "--batch-size",
      "1",
    ]);
    expect(res.exitCode).not.toBe(0);
    expect(res.stderr).toMatch(/stimulus img_0007\.png \(row 7\) changes the model's graph/);
    const st = JSON.parse(
      (await torchlens(["dataset", "status", at("bright-out"), "--json"])).stdout,
    );
    expect(st.shards[0].state).toBe("failed");
    expect(st.batches.done).toBe(7);
  }, 120_000);
  test("the README's worked example runs as written and prints one RDM per layer", async () => {
    const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Datasets"), readme.indexOf("## Graph"));
    const blocks = [...section.matchAll(/```(\w*)\n([\s\S]*?)```/g)];
    const here = (text: string) =>
      text
        .replaceAll("/tmp/stimuli", at("readme-stimuli"))
        .replaceAll("/tmp/features", at("readme-features"))
        .replaceAll("npx torchlens", `node ${BIN}`)
        .replaceAll("python3 ", `${PYTHON} `);
    const shell = here(blocks[0][2]);
    const run = await execa("bash", ["-euo", "pipefail", "-c", shell], {
      cwd: ROOT,
      env: { TORCHLENS_PYTHON: PYTHON },
      reject: false,
    });
    expect(run.stderr).toMatch(
      /the dataset is complete; check: 4 stimuli × 3 layers match extract/,
    );
    expect(run.exitCode).toBe(0);
    expect(blocks[1][1]).toBe("python");
    const rdm = await python(["-c", here(blocks[1][2])]);
    expect(rdm.stderr).toBe("");
    expect(
      rdm.stdout
        .trim()
        .split("\n")
        .map((l) => l.split(" ").slice(0, 2).join(" ")),
    ).toEqual(["relu_1_3 features.2", "relu_2_7 features.6", "linear_2_13 classifier.4"]);
  }, 180_000);
});
