/** `ls`, `show` and `profile` through the real CLI, on runs made once by the real agent. */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import type { ModuleEntry, Pass, RunLog } from "../../src/log/types.js";
import type { ArrayStats } from "../../src/stats/arrayStats.js";
import {
  BIN,
  fixture,
  fixtureInput,
  PYTHON,
  python,
  ROOT,
  tempDir,
  torchlens,
} from "../helpers/cli.js";

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const run = (name: string) => path.join(tmp.dir, name);
const logOf = (name: string): RunLog =>
  JSON.parse(readFileSync(path.join(run(name), "log.json"), "utf8"));

beforeAll(async () => {
  await Promise.all(
    ["cnn", "dynamic_loop", "transformer"].map(async (name) => {
      const r = await torchlens([
        "extract",
        fixture(`${name}.py`),
        ...fixtureInput(name),
        "-o",
        run(name),
      ]);
      if (r.exitCode !== 0) throw new Error(`extract ${name} failed: ${r.stderr}`);
    }),
    // a run that saved only the conv2d passes
    torchlens([
      "extract",
      fixture("cnn.py"),
      "--input",
      fixture("cnn_input.pt"),
      "-o",
      run("cnn_conv"),
      "--layers",
      "conv2d",
    ]).then((r) => {
      if (r.exitCode !== 0) throw new Error(`extract cnn --layers conv2d failed: ${r.stderr}`);
    }),
  );
}, 120_000);

/** Runs the CLI and expects success with nothing on stderr. */
async function ok(args: string[]): Promise<string> {
  const r = await torchlens(args);
  expect(r.stderr).toBe("");
  expect(r.exitCode).toBe(0);
  return r.stdout;
}

/** numpy's view of one array in a run: the same statistics arrayStats gives, in float64. */
async function numpyStats(runDir: string, key: string): Promise<ArrayStats> {
  const script = `
import json, sys, numpy as np
a = np.load(sys.argv[1])[sys.argv[2]]
x = np.abs(a) if np.iscomplexobj(a) else a.astype(np.float64)
f = x[np.isfinite(x)]
print(json.dumps({
  "count": int(a.size),
  "min": float(f.min()) if f.size else None, "max": float(f.max()) if f.size else None,
  "mean": float(f.mean()) if f.size else None, "std": float(f.std()) if f.size else None,
  "nan": int(np.isnan(x).sum()), "posinf": int(np.isposinf(x).sum()), "neginf": int(np.isneginf(x).sum()),
  "zeros": int((x == 0).sum()),
}))`;
  const r = await python(["-c", script, path.join(runDir, "activations.npz"), key]);
  expect(r.stderr).toBe("");
  return JSON.parse(r.stdout);
}

function expectStatsEqual(ours: ArrayStats, numpy: ArrayStats): void {
  for (const k of ["count", "nan", "posinf", "neginf", "zeros"] as const)
    expect(ours[k]).toBe(numpy[k]);
  expect(ours.min).toBe(numpy.min);
  expect(ours.max).toBe(numpy.max);
  expect(ours.mean).toBeCloseTo(numpy.mean as number, 9);
  expect(ours.std).toBeCloseTo(numpy.std as number, 9);
}

/** The data rows of a table (everything after the header, up to a rule line). */
function tableRows(text: string): string[][] {
  const lines = text.split("\n");
  const end = lines.findIndex((l) => /^-+(\s+-+)*$/.test(l));
  return lines
    .slice(1, end < 0 ? undefined : end)
    .filter(Boolean)
    .map((l) => l.trim().split(/\s+/));
}

describe("ls", () => {
  test("the table has one row per pass, labels in execution order, cut nowhere when stdout is not a terminal", async () => {
    const log = logOf("transformer");
    const out = await ok(["ls", run("transformer")]);
    expect(out.split("\n")[0]).toMatch(
      /^label\s+function\s+module\s+shape\s+dtype\s+size\s+time ms$/,
    );
    expect(tableRows(out).map((r) => r[0])).toEqual(log.passes.map((p) => p.label));
    expect(out).not.toContain("…");
  });

  test("a saved column appears when the run left passes out, and says which", async () => {
    const rows = tableRows(await ok(["ls", run("cnn_conv")]));
    const saved = new Map(rows.map((r) => [r[0], r[r.length - 1]]));
    expect(saved.get("conv2d_1_1")).toBe("yes");
    expect(saved.get("relu_1_3")).toBe("no");
    expect(await ok(["ls", run("cnn")])).not.toMatch(/saved/);
  });

  test("--json prints exactly the log's passes, unchanged", async () => {
    for (const name of ["cnn", "dynamic_loop", "transformer"]) {
      expect(JSON.parse(await ok(["ls", run(name), "--json"]))).toEqual(logOf(name).passes);
    }
  });

  test("--layers keeps only the selected passes, in the table and in --json", async () => {
    const log = logOf("cnn");
    const table = await ok(["ls", run("cnn"), "--layers", "conv2d"]);
    expect(tableRows(table).map((r) => r[0])).toEqual(["conv2d_1_1", "conv2d_2_5"]);
    const json: Pass[] = JSON.parse(
      await ok(["ls", run("cnn"), "--layers", "features.0,relu", "--json"]),
    );
    const want = log.passes.filter((p) => p.module === "features.0" || p.func === "relu");
    expect(json).toEqual(want);
    expect(json.map((p) => p.label)).toEqual(["conv2d_1_1", "relu_1_3", "relu_2_7", "relu_3_12"]);
  });

  test("--by layer lists each layer once with its pass count: the dynamic_loop's loop layers show 3", async () => {
    const log = logOf("dynamic_loop");
    const rows = tableRows(await ok(["ls", run("dynamic_loop"), "--by", "layer"]));
    expect(rows.map((r) => r[0])).toEqual(log.layers.map((l) => l.label));
    // the last two cells are passes and time
    const passes = new Map(rows.map((r) => [r[0], Number(r[r.length - 2])]));
    const loop = log.layers.filter((l) => l.num_passes === 3).map((l) => l.label);
    expect(loop).toContain(log.layers.find((l) => l.module === "cell")?.label);
    for (const l of log.layers) expect(passes.get(l.label)).toBe(l.num_passes);
    expect([...passes].filter(([, n]) => n === 3).map(([l]) => l)).toEqual(loop);
    expect(JSON.parse(await ok(["ls", run("dynamic_loop"), "--by", "layer", "--json"]))).toEqual(
      log.layers,
    );
  });

  test("--modules prints the module tree, children indented under their parent", async () => {
    const out = await ok(["ls", run("cnn"), "--modules"]);
    const lines = out.split("\n");
    expect(lines[0]).toMatch(/^module\s+class\s+calls\s+params\s+passes\s+time ms\s+size$/);
    const indent = (address: string) => {
      const line = lines.find((l) => l.trimStart().startsWith(`${address} `));
      expect(line).toBeDefined();
      return (line as string).length - (line as string).trimStart().length;
    };
    expect(lines[1]).toMatch(/^\(model\)\s+SmallCNN\s+1\s+34570\s/);
    expect(indent("features")).toBe(2);
    expect(indent("features.0")).toBe(4);
    expect(indent("classifier.4")).toBe(4);
    expect(lines.findIndex((l) => l.includes("features.7"))).toBeLessThan(
      lines.findIndex((l) => /^\s+classifier\s/.test(l)),
    );
    expect(out).toMatch(/features\.0\s+Conv2d\s+1\s+224\s+1\s/);
  });

  test("--modules --json prints the log's module entries", async () => {
    const json: ModuleEntry[] = JSON.parse(
      await ok(["ls", run("transformer"), "--modules", "--json"]),
    );
    const byAddress = (a: ModuleEntry, b: ModuleEntry) => a.address.localeCompare(b.address);
    expect([...json].sort(byAddress)).toEqual([...logOf("transformer").modules].sort(byAddress));
  });

  test("a selector that matches nothing, a bad --by, and a missing run exit 2 with a message on stderr", async () => {
    const bad = await torchlens(["ls", run("cnn"), "--layers", "relu_1_33"]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stdout).toBe("");
    expect(bad.stderr).toMatch(/relu_1_33.*close: .*relu_1_3/);
    expect((await torchlens(["ls", run("cnn"), "--by", "module"])).exitCode).toBe(2);
    const missing = await torchlens(["ls", path.join(tmp.dir, "no-such-run")]);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toMatch(/run directory not found/);
  });
});

describe("show", () => {
  test("a pass's statistics equal numpy's for its saved array", async () => {
    const picks: [string, (p: Pass) => boolean][] = [
      ["cnn", (p) => p.label === "relu_1_3"],
      ["cnn", (p) => p.func === "batch_norm"],
      // the second layer's first layer norm: on every torch (softmax is not: torch 2 fuses it)
      ["transformer", (p) => p.func === "layer_norm" && p.module === "layers.1.norm1"],
      ["dynamic_loop", (p) => p.func === "tanh" && p.pass === 2],
    ];
    for (const [name, pick] of picks) {
      const pass = logOf(name).passes.find(pick) as Pass;
      const view = JSON.parse(await ok(["show", run(name), pass.label, "--json"]));
      expect(view.kind).toBe("pass");
      expect(view.pass).toEqual(pass);
      expectStatsEqual(view.stats, await numpyStats(run(name), pass.array as string));
    }
  });

  test("the readable block names parents and children with argument positions, module stack, and stats", async () => {
    const out = await ok(["show", run("cnn"), "relu_1_3"]);
    expect(out).toMatch(/^pass relu_1_3 /);
    expect(out).toMatch(/parents\s+batch_norm_1_2 \(arg 0\)/);
    expect(out).toMatch(/children\s+max_pool2d_1_4 \(arg 0\)/);
    expect(out).toMatch(/module stack\s+features:1 > features\.2:1/);
    expect(out).toMatch(/shape\s+1x8x32x32/);
    const numpy = await numpyStats(run("cnn"), "relu_1_3");
    expect(out).toMatch(new RegExp(`zeros\\s+${numpy.zeros} of ${numpy.count}`));
    expect(out).toMatch(/min \/ max\s+0 \//);
  });

  test("a loop layer shows one line per pass, each with its own statistics", async () => {
    const log = logOf("dynamic_loop");
    const layer = log.layers.find((l) => l.module === "cell");
    const out = await ok(["show", run("dynamic_loop"), layer?.label as string]);
    expect(out).toMatch(new RegExp(`^layer ${layer?.label}\\s+3 passes`));
    const rows = out.split("\n").filter((l) => l.startsWith(`${layer?.label}:`));
    expect(rows.map((r) => r.split(/\s+/)[0])).toEqual(layer?.passes);
    const json = JSON.parse(
      await ok(["show", run("dynamic_loop"), layer?.label as string, "--json"]),
    );
    expect(json.kind).toBe("layer");
    expect(json.passes).toHaveLength(3);
    for (const v of json.passes)
      expectStatsEqual(v.stats, await numpyStats(run("dynamic_loop"), v.pass.array));
  });

  test("a selector that picks exactly one pass works as a label (-1 is the output)", async () => {
    const view = JSON.parse(await ok(["show", run("cnn"), "-1", "--json"]));
    expect(view.pass.label).toBe("output_1");
  });

  test("--npy writes a .npy that np.load reads back equal to the npz array", async () => {
    const label = "conv2d_1_1";
    const r = await execa("node", [BIN, "show", run("cnn"), label, "--npy"], {
      env: { TORCHLENS_PYTHON: PYTHON },
      cwd: ROOT,
      encoding: "buffer",
      reject: false,
    });
    expect(r.exitCode).toBe(0);
    expect(Buffer.from(r.stderr).toString()).toBe("");
    const file = path.join(tmp.dir, "x.npy");
    writeFileSync(file, r.stdout);
    const check = await python([
      "-c",
      "import sys, numpy as np; a = np.load(sys.argv[1]); b = np.load(sys.argv[2])[sys.argv[3]]; print(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b))",
      file,
      path.join(run("cnn"), "activations.npz"),
      label,
    ]);
    expect(check.stderr).toBe("");
    expect(check.stdout.trim()).toBe("True");
  });

  test("--npy refuses a layer with several passes and names the pass labels to use", async () => {
    const r = await torchlens(["show", run("dynamic_loop"), "tanh_1_8", "--npy"]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/tanh_1_8:1, tanh_1_8:2, tanh_1_8:3/);
  });

  test("--npy refuses to write binary data to a terminal", async () => {
    // `script` gives the command a pseudo-terminal as stdout.
    const cmd = `node ${BIN} show ${run("cnn")} relu_1_3 --npy; echo "rc=$?"`;
    const r = await execa("script", ["-qec", cmd, "/dev/null"], {
      env: { TORCHLENS_PYTHON: PYTHON },
      reject: false,
    });
    expect(r.stdout).toMatch(/stdout is a terminal/);
    expect(r.stdout).toMatch(/rc=2/);
  });

  test("a pass that was not saved says so, has null stats in --json, and --npy refuses it", async () => {
    expect(await ok(["show", run("cnn_conv"), "relu_1_3"])).toMatch(/array\s+not saved/);
    const view = JSON.parse(await ok(["show", run("cnn_conv"), "relu_1_3", "--json"]));
    expect(view.pass.saved).toBe(false);
    expect(view.stats).toBeNull();
    const npy = await torchlens(["show", run("cnn_conv"), "relu_1_3", "--npy"]);
    expect(npy.exitCode).toBe(2);
    expect(npy.stderr).toMatch(/relu_1_3 was not saved/);
    // the saved ones still have their statistics
    const conv = JSON.parse(await ok(["show", run("cnn_conv"), "conv2d_1_1", "--json"]));
    expectStatsEqual(conv.stats, await numpyStats(run("cnn_conv"), "conv2d_1_1"));
  });

  test("an unknown label exits 2 and lists close matches", async () => {
    const r = await torchlens(["show", run("cnn"), "relu_1_33"]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/"relu_1_33" matches no pass.*close: .*relu_1_3/);
  });

  test("a selector matching passes of several layers is refused, naming some of them", async () => {
    const r = await torchlens(["show", run("cnn"), "relu"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/matches 3 passes in 3 layers \(relu_1_3, relu_2_7, relu_3_12\)/);
  });
});

describe("profile", () => {
  const sum = (passes: Pass[], f: (p: Pass) => number) => passes.reduce((a, p) => a + f(p), 0);

  test("--by module: totals equal the sums over all passes and all parameters", async () => {
    for (const name of ["cnn", "transformer"]) {
      const log = logOf(name);
      const p = JSON.parse(await ok(["profile", run(name), "--by", "module", "--json"]));
      expect(p.totals.time_ms).toBeCloseTo(
        sum(log.passes, (x) => x.time_ms),
        9,
      );
      expect(p.totals.nbytes).toBe(sum(log.passes, (x) => x.nbytes));
      expect(p.totals.passes).toBe(log.passes.length);
      expect(p.totals.num_params).toBe(log.model.num_params);
      expect(p.totals.param_bytes).toBe(4 * log.model.num_params); // all float32
      // the model's own row covers every module's parameters and time
      const model = p.rows.find((r: { name: string }) => r.name === "");
      expect(model.num_params).toBe(log.model.num_params);
    }
  });

  test("rows are sorted by time, slowest first, with their share of the total", async () => {
    const p = JSON.parse(await ok(["profile", run("transformer"), "--json", "--top", "0"]));
    const times = p.rows.map((r: { time_ms: number }) => r.time_ms);
    expect(times).toEqual([...times].sort((a, b) => b - a));
    expect(p.rows).toHaveLength(logOf("transformer").passes.length);
    const pct = p.rows.reduce((a: number, r: { time_pct: number }) => a + r.time_pct, 0);
    expect(pct).toBeCloseTo(100, 6);
  });

  test("--by layer sums each layer's passes: the loop layer counts 3 passes and its parameters once", async () => {
    const log = logOf("dynamic_loop");
    const p = JSON.parse(
      await ok(["profile", run("dynamic_loop"), "--by", "layer", "--json", "--top", "0"]),
    );
    const cell = p.rows.find((r: { module: string }) => r.module === "cell");
    expect(cell.passes).toBe(3);
    expect(cell.num_params).toBe(72);
    expect(cell.param_bytes).toBe(288);
    expect(p.rows).toHaveLength(log.layers.length);
    expect(sum(p.rows, (r) => r.time_ms)).toBeCloseTo(p.totals.time_ms, 9);
  });

  test("--top 3 shows 3 rows and a totals line; the default shows at most 20", async () => {
    const out = await ok(["profile", run("transformer"), "--top", "3"]);
    expect(tableRows(out)).toHaveLength(3);
    expect(out).toMatch(/\ntotal\s+.*100\.0%/);
    expect(out).toMatch(/the 3 slowest of 72 passes/);
    const p = JSON.parse(await ok(["profile", run("transformer"), "--json"]));
    expect(p.rows).toHaveLength(20);
    expect(p.num_rows).toBe(72);
  });

  test("--by pass is the default, and --by op (its earlier name) gives the same output", async () => {
    for (const flags of [[], ["--json"], ["--top", "0"]]) {
      const plain = await ok(["profile", run("cnn"), ...flags]);
      expect(await ok(["profile", run("cnn"), "--by", "pass", ...flags])).toBe(plain);
      expect(await ok(["profile", run("cnn"), "--by", "op", ...flags])).toBe(plain);
    }
    expect(tableRows(await ok(["profile", run("cnn"), "--by", "op", "--top", "0"]))).toHaveLength(
      logOf("cnn").passes.length,
    );
  });

  test("a bad --by or --top exits 2", async () => {
    const bad = await torchlens(["profile", run("cnn"), "--by", "opp"]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/--by "opp" is not pass, layer or module/);
    expect((await torchlens(["profile", run("cnn"), "--top", "-3"])).exitCode).toBe(2);
  });
});
