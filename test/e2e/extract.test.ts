import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { RunLog } from "../../src/log/types.js";
import {
  FIXTURES,
  fixture,
  fixtureInput,
  PASS_FIELDS,
  python,
  tempDir,
  torchlens,
} from "../helpers/cli.js";

const tmp = tempDir();
afterAll(() => tmp.cleanup());
/** This torch has F.scaled_dot_product_attention (torch 2), which nn.MultiheadAttention uses. */
const HAS_SDPA =
  (
    await python([
      "-c",
      "import torch.nn.functional as F; print(hasattr(F, 'scaled_dot_product_attention'))",
    ])
  ).stdout.trim() === "True";

function readRun(run: string) {
  return {
    log: JSON.parse(readFileSync(path.join(run, "log.json"), "utf8")) as RunLog,
    manifest: JSON.parse(readFileSync(path.join(run, "manifest.json"), "utf8")),
  };
}

describe.each(FIXTURES)("extract %s through the real CLI and agent", (name) => {
  const run = path.join(tmp.dir, name);
  let result: Awaited<ReturnType<typeof torchlens>>;
  beforeAll(async () => {
    result = await torchlens([
      "extract",
      fixture(`${name}.py`),
      ...fixtureInput(name),
      "-o",
      run,
      "--json",
    ]);
  });

  test("exits 0 and writes a complete run directory", () => {
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    expect(readdirSync(run).sort()).toEqual(["activations.npz", "log.json", "manifest.json"]);
    expect(readRun(run).manifest.status).toBe("complete");
  });

  test("the --json summary matches the log", () => {
    const summary = JSON.parse(result.stdout);
    const { log } = readRun(run);
    expect(summary.passes).toBe(log.num_passes);
    expect(summary.run).toBe(run);
  });

  test("saved outputs equal the model's own outputs, and no torch call went unrecorded", async () => {
    const check = await python([
      path.join("test/helpers/check_run.py"),
      run,
      fixture(`${name}.py`),
      fixture(`${name}_input.pt`),
    ]);
    expect(check.stderr).toBe("");
    const facts = JSON.parse(check.stdout);
    expect(facts.outputs_equal).toBe(true);
    const { log } = readRun(run);
    const opPasses = log.passes.filter((p) => p.kind === "op" || p.kind === "internal").length;
    expect(opPasses).toBeGreaterThanOrEqual(facts.torch_calls);
    expect(log.num_ops_dispatched).toBeGreaterThanOrEqual(facts.torch_calls);
    // every saved pass is in the npz under its array key, and nothing else is
    expect(facts.npz_keys).toEqual(
      log.passes
        .filter((p) => p.saved)
        .map((p) => p.array)
        .sort(),
    );
  });

  test("every parent and child link points at a pass in the log, both ways", () => {
    const { log } = readRun(run);
    const byLabel = new Map(log.passes.map((p) => [p.label, p]));
    for (const p of log.passes) {
      for (const parent of p.parents) expect(byLabel.get(parent)?.children).toContain(p.label);
      for (const child of p.children) expect(byLabel.get(child)?.parents).toContain(p.label);
    }
    expect(new Set(log.passes.map((p) => p.label)).size).toBe(log.passes.length);
  });

  test("every pass carries the fields log.json promises", () => {
    const { log } = readRun(run);
    for (const p of log.passes) for (const f of PASS_FIELDS) expect(p).toHaveProperty(f);
    expect(log.inputs.length).toBeGreaterThan(0);
    expect(log.outputs.length).toBeGreaterThan(0);
  });
});

describe("what the log says about particular models", () => {
  test("multi_io: three inputs (two positional, one keyword) and a dict-plus-tuple output structure", () => {
    const { log } = readRun(path.join(tmp.dir, "multi_io"));
    const inputs = log.passes.filter((p) => p.is_input);
    expect(inputs.map((p) => p.input_path)).toEqual(["args.0", "args.1", "kwargs.mask"]);
    expect(JSON.stringify(log.output_structure)).toMatch(/"kind":"dict"/);
  });

  test("noisy: tensors made inside forward are internal sources without parents", () => {
    const { log } = readRun(path.join(tmp.dir, "noisy"));
    const internal = log.passes.filter((p) => p.kind === "internal");
    expect(internal.map((p) => p.func)).toEqual(
      expect.arrayContaining(["tensor", "arange", "ones"]),
    );
    for (const p of internal) {
      expect(p.parents).toEqual([]);
      expect(p.is_internal_source).toBe(true);
    }
  });

  test("branching_mlp: an in-place op is its own pass, and later ops take it as their parent", () => {
    const { log } = readRun(path.join(tmp.dir, "branching_mlp"));
    const inplace = log.passes.filter((p) => p.is_inplace);
    expect(inplace.length).toBeGreaterThan(0);
    for (const p of inplace) expect(p.children.length).toBeGreaterThan(0);
  });

  test("cnn: batchnorm's running statistics are buffer passes with module addresses", () => {
    const { log } = readRun(path.join(tmp.dir, "cnn"));
    const buffers = log.passes.filter((p) => p.is_buffer);
    expect(buffers.length).toBeGreaterThan(0);
    for (const b of buffers) expect(b.address).toMatch(/running_(mean|var)$/);
    const conv = log.passes.find((p) => p.func === "conv2d");
    expect(conv?.params.length).toBe(2);
    expect(conv?.num_params).toBeGreaterThan(0);
    expect(conv?.module).not.toBeNull();
  });

  // nn.TransformerEncoderLayer asks its attention for no weights (need_weights=False). A torch
  // without F.scaled_dot_product_attention (1.13) computes them op by op anyway, softmax included;
  // one with it (torch 2) calls that fused op instead, and no softmax exists to record.
  test("transformer: attention internals (softmax, or the fused attention op) are recorded, inside the attention module", () => {
    const { log } = readRun(path.join(tmp.dir, "transformer"));
    const attention = log.passes.filter(
      (p) => p.func === (HAS_SDPA ? "scaled_dot_product_attention" : "softmax"),
    );
    expect(attention.length).toBe(2);
    for (const p of attention) expect(p.module).toMatch(/self_attn$/);
    // and, on either torch, the projections in and out of attention, once per layer at least
    for (const layer of ["layers.0.self_attn", "layers.1.self_attn"]) {
      const linear = log.passes.filter((p) => p.func === "linear" && p.module === layer);
      expect(linear.length).toBeGreaterThanOrEqual(2);
    }
  });
});

describe("the run directory is never clobbered", () => {
  test("extract into an existing run fails with exit 2 and leaves it intact; --force replaces it", async () => {
    const run = path.join(tmp.dir, "clobber");
    const args = ["extract", fixture("cnn.py"), "--input", fixture("cnn_input.pt"), "-o", run];
    expect((await torchlens(args)).exitCode).toBe(0);
    const before = readFileSync(path.join(run, "manifest.json"), "utf8");
    const again = await torchlens(args);
    expect(again.exitCode).toBe(2);
    expect(again.stderr).toMatch(/already exists/);
    expect(again.stderr).toMatch(/--force/);
    expect(readFileSync(path.join(run, "manifest.json"), "utf8")).toBe(before);
    const forced = await torchlens([...args, "--force"]);
    expect(forced.exitCode).toBe(0);
    expect(JSON.parse(readFileSync(path.join(run, "manifest.json"), "utf8")).created).not.toBe(
      JSON.parse(before).created,
    );
    expect(readdirSync(tmp.dir).filter((n) => n.includes("partial"))).toEqual([]);
  });

  test("--force refuses to replace a directory that is not a run", async () => {
    const dir = path.join(tmp.dir, "precious");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(dir);
    writeFileSync(path.join(dir, "notes.txt"), "keep me");
    const res = await torchlens(["extract", fixture("cnn.py"), "-o", dir, "--force"]);
    expect(res.exitCode).toBe(2);
    expect(readFileSync(path.join(dir, "notes.txt"), "utf8")).toBe("keep me");
  });

  test("a failing forward pass leaves no run and no temporary directory behind", async () => {
    const bad = path.join(tmp.dir, "bad_model.py");
    writeFileSync(
      bad,
      "import torch\nfrom torch import nn\n\nclass Bad(nn.Module):\n    def forward(self, x):\n        return torch.zeros(2, 3) @ x\n\ndef build_model():\n    return Bad()\n",
    );
    const run = path.join(tmp.dir, "bad_run");
    const res = await torchlens(["extract", bad, "--input-shape", "4,4", "-o", run]);
    expect(res.exitCode).toBe(1);
    expect(res.stderr).toMatch(/forward pass raised/);
    expect(res.stderr).toMatch(/bad_model\.py:6/);
    expect(res.stderr).not.toMatch(/Traceback \(most recent/);
    expect(existsSync(run)).toBe(false);
    expect(readdirSync(tmp.dir).filter((n) => n.includes("partial"))).toEqual([]);
  });
});

describe("inputs", () => {
  test("--input - reads a .pt from stdin and keeps a copy of it in the run", async () => {
    const run = path.join(tmp.dir, "stdin_run");
    const res = await torchlens(["extract", fixture("cnn.py"), "--input", "-", "-o", run], {
      input: readFileSync(fixture("cnn_input.pt")),
    });
    expect(res.exitCode).toBe(0);
    const { manifest } = readRun(run);
    expect(manifest.input).toMatchObject({ source: "stdin", path: "input.pt", in_run: true });
    expect(readFileSync(path.join(run, "input.pt"))).toEqual(readFileSync(fixture("cnn_input.pt")));
  });

  test("--input-shape makes a seeded random input, recorded in the manifest", async () => {
    const run = path.join(tmp.dir, "shape_run");
    const res = await torchlens([
      "extract",
      fixture("cnn.py"),
      "--input-shape",
      "2,3,32,32",
      "--seed",
      "7",
      "-o",
      run,
    ]);
    expect(res.exitCode).toBe(0);
    const { log, manifest } = readRun(run);
    expect(manifest.input).toMatchObject({ kind: "shape", shapes: [[2, 3, 32, 32]] });
    expect(manifest.seed).toBe(7);
    expect(log.passes[0].shape).toEqual([2, 3, 32, 32]);
  });

  test("a malformed --input-shape is a usage error naming the flag", async () => {
    const res = await torchlens([
      "extract",
      fixture("cnn.py"),
      "--input-shape",
      "1,three",
      "-o",
      path.join(tmp.dir, "never"),
    ]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/--input-shape/);
  });

  test("without any input flag the file's example_input() is used", async () => {
    const run = path.join(tmp.dir, "example_run");
    const res = await torchlens(["extract", fixture("dynamic_loop.py"), "-o", run]);
    expect(res.exitCode).toBe(0);
    expect(readRun(run).manifest.input).toEqual({ kind: "example" });
  });

  test("a missing model file is a usage error at once, without waiting for Python", async () => {
    const res = await torchlens([
      "extract",
      "no/such/model.py",
      "-o",
      path.join(tmp.dir, "never2"),
    ]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/model file not found/);
  });
});

test("user prints inside forward go to stderr and the stream survives them", async () => {
  const noisy = path.join(tmp.dir, "printing.py");
  writeFileSync(
    noisy,
    "import sys, torch\nfrom torch import nn\n\nclass P(nn.Module):\n    def forward(self, x):\n        print('PRINTED-BY-USER')\n        sys.stdout.buffer.write(bytes(range(256)))\n        sys.stdout.flush()\n        return x * 2\n\ndef build_model():\n    return P()\n",
  );
  const run = path.join(tmp.dir, "printing_run");
  const res = await torchlens(["extract", noisy, "--input-shape", "3", "-o", run, "--json"]);
  expect(res.exitCode).toBe(0);
  expect(res.stderr).toContain("PRINTED-BY-USER");
  expect(res.stdout).not.toContain("PRINTED-BY-USER");
  expect(JSON.parse(res.stdout).passes).toBe(3);
});

test("extract --graph also draws the rolled graph into the run", async () => {
  const run = path.join(tmp.dir, "with_graph");
  const res = await torchlens(["extract", fixture("two_loops.py"), "-o", run, "--graph"]);
  expect(res.exitCode).toBe(0);
  const svg = readFileSync(path.join(run, "graph.svg"), "utf8");
  expect(svg).toMatch(/<svg/);
  expect(svg).toContain("linear_1_1");
});

test("arrays the agent writes with O_DIRECT (TORCHLENS_AGENT_DIRECT_IO=on) read back equal to buffered ones, and the run validates", async () => {
  // two convolutions on a 300x301 image: 2.9 MB activations, long enough for whole direct blocks,
  // with unaligned heads and tails; python_agent/torchlens_agent/directio.py
  const model = path.join(tmp.dir, "wide_conv.py");
  writeFileSync(
    model,
    [
      "import torch",
      "from torch import nn",
      "class Wide(nn.Module):",
      "    def __init__(self):",
      "        super().__init__()",
      "        self.a = nn.Conv2d(3, 8, 3, padding=1)",
      "        self.b = nn.Conv2d(8, 8, 3, padding=1)",
      "    def forward(self, x):",
      "        y = torch.relu(self.a(x))",
      "        return self.b(y) + y",
      "def build_model():",
      "    return Wide()",
      "",
    ].join("\n"),
  );
  const runs: Record<string, string> = {};
  for (const mode of ["on", "off"]) {
    runs[mode] = path.join(tmp.dir, `direct_io_${mode}`);
    const res = await torchlens(
      ["extract", model, "--input-shape", "1,3,300,301", "--seed", "4", "-o", runs[mode]],
      { env: { TORCHLENS_AGENT_DIRECT_IO: mode } },
    );
    expect(res.stderr).not.toMatch(/error|warning/i);
    expect(res.exitCode).toBe(0);
  }
  const compare = await python([
    "-c",
    [
      "import sys, zipfile",
      "a, b = (zipfile.ZipFile(p + '/activations.npz') for p in sys.argv[1:3])",
      "assert a.testzip() is None and b.testzip() is None, 'a CRC does not match its entry'",
      "assert a.namelist() == b.namelist(), (a.namelist(), b.namelist())",
      "diff = [n for n in a.namelist() if a.read(n) != b.read(n)]",
      "assert not diff, diff",
      "print(len(a.namelist()), max(i.file_size for i in a.infolist()))",
    ].join("\n"),
    runs.on,
    runs.off,
  ]);
  expect(compare.stderr).toBe("");
  const [entries, largest] = compare.stdout.trim().split(" ").map(Number);
  expect(entries).toBeGreaterThanOrEqual(6);
  expect(largest).toBeGreaterThan(2 << 20);
  const valid = await torchlens(["validate", runs.on]);
  expect(valid.exitCode).toBe(0);
  expect(valid.stdout + valid.stderr).toMatch(/valid: 6 passed, 0 failed/);
});
