/**
 * Reading gradients (docs/gradients.md, "Reading gradients"): `show`, `ls` and `graph` on a run
 * made with --grads, and the same commands refusing gradient options on runs without them.
 *
 * The runs are the golden two_loops and cnn runs (test/golden/runs) turned into torchlens.log/2
 * runs with gradients: every pass given a `grad` (saved, none, or not recorded), a gradients.npz
 * written with NpzWriter whose arrays have known norms. The CLI cases run bin/torchlens.js over
 * dist/ (npm run build first).
 */
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { fromDot, type GraphBaseModel, type NodeModel } from "ts-graphviz";
import { graphDot } from "../../src/cli/graph.js";
import { ls } from "../../src/cli/ls.js";
import { renderShow, showView } from "../../src/cli/show.js";
import { TorchlensError } from "../../src/errors.js";
import { LEGEND_CLUSTER } from "../../src/graph/dot.js";
import { gradNorm, maxGradNorm, normScale, rampColor, shadeOf } from "../../src/graph/shade.js";
import type { Pass, PassGrad, RunLog } from "../../src/log/types.js";
import { NpzWriter } from "../../src/store/npz.js";
import { readRun } from "../../src/store/readRun.js";
import { python, ROOT, tempDir, torchlens, torchlensBytes } from "../helpers/cli.js";

const GOLDEN = path.join(ROOT, "test/golden/runs");
const tmp = tempDir("torchlens-grads-");
afterAll(() => tmp.cleanup());

/** What each pass of a made-up gradient run gets: a scale for its saved gradient, or no gradient. */
type Plan = Record<string, number | "none" | "not recorded">;

/** two_loops: norms across orders of magnitude, one pass the target does not depend on, one left out. */
const TWO_LOOPS_PLAN: Plan = {
  input_1: 1e-3,
  "linear_1_1:1": 2,
  "relu_1_2:1": 1e-2,
  "linear_1_1:2": 5,
  "relu_1_2:2": 0.5,
  "linear_1_1:3": 1,
  "relu_1_2:3": 0.25,
  "linear_2_3:1": 3,
  "tanh_1_4:1": "none",
  "linear_2_3:2": 4,
  "tanh_1_4:2": 8,
  linear_3_5: "not recorded",
  sigmoid_1_6: 100,
  output_1: 10,
};

/** A gradient of `shape` whose L2 norm is `scale`: equal magnitudes, alternating in sign. */
function gradArray(shape: number[], scale: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((i % 2 ? -1 : 1) * scale) / Math.sqrt(n);
  return a;
}

const l2 = (a: Float32Array) => Math.sqrt(a.reduce((s, x) => s + x * x, 0));

/**
 * Copies the golden run `name` to `dir` and makes it a run with gradients by `plan` (passes not
 * in it get a saved gradient of norm 1): log.json and manifest.json at torchlens.log/2, each pass's
 * `grad`, the log's `gradients`, and gradients.npz.
 */
async function makeGradRun(name: string, dir: string, plan: Plan): Promise<RunLog> {
  cpSync(path.join(GOLDEN, name), dir, { recursive: true });
  const log = JSON.parse(readFileSync(path.join(dir, "log.json"), "utf8")) as RunLog;
  const npz = await NpzWriter.create(path.join(dir, "gradients.npz"));
  let saved = 0;
  for (const p of log.passes) {
    const what = plan[p.label] ?? 1;
    if (what === "not recorded") p.grad = null;
    else if (what === "none") p.grad = { status: "none" };
    else {
      const data = gradArray(p.shape, what);
      const e = npz.beginEntry(p.label, "<f4", p.shape, data.byteLength);
      await npz.write(e, new Uint8Array(data.buffer));
      await npz.endEntry(e);
      const grad: PassGrad = {
        status: "saved",
        array: p.label,
        shape: p.shape,
        dtype: p.dtype,
        stored_dtype: "float32",
        norm: l2(data),
      };
      p.grad = grad;
      saved++;
    }
  }
  await npz.close();
  log.schema = "torchlens.log/2";
  log.gradients = {
    file: "gradients.npz",
    target: { kind: "sum" },
    value: 1.5,
    num_saved: saved,
    params: [],
    backward_ms: 1,
  };
  writeFileSync(path.join(dir, "log.json"), JSON.stringify(log, null, 1));
  const manifestFile = path.join(dir, "manifest.json");
  const manifest = JSON.parse(readFileSync(manifestFile, "utf8"));
  manifest.schema = "torchlens.log/2";
  manifest.files.gradients = "gradients.npz";
  writeFileSync(manifestFile, JSON.stringify(manifest, null, 1));
  return log;
}

const TWO = path.join(tmp.dir, "two_loops");
const CNN = path.join(tmp.dir, "cnn");
/** An old run, read where the goldens are: no gradients. */
const OLD = path.join(GOLDEN, "two_loops");
let two: RunLog;

beforeAll(async () => {
  two = await makeGradRun("two_loops", TWO, TWO_LOOPS_PLAN);
  // cnn: dropout the target does not depend on (as if in eval with a detached branch)
  await makeGradRun("cnn", CNN, { dropout_1_10: "none", buffer_1: "none", buffer_2: "none" });
});

const pass = (log: RunLog, label: string) => log.passes.find((p) => p.label === label) as Pass;
const normOf = (label: string) => gradNorm(pass(two, label)) as number;

/** The error a call throws, for its words. */
async function thrown(f: () => Promise<unknown> | unknown): Promise<TorchlensError> {
  try {
    await f();
  } catch (err) {
    if (err instanceof TorchlensError) return err;
    throw err;
  }
  throw new Error("expected a TorchlensError, got none");
}

describe("the made-up gradient run is what the tests assume", () => {
  test("readRun finds gradients.npz and the planned norms are in the log", async () => {
    const run = await readRun(TWO);
    expect(run.gradsNpz).toBe(path.join(TWO, "gradients.npz"));
    expect(normOf("sigmoid_1_6")).toBeCloseTo(100, 3);
    expect(normOf("input_1")).toBeCloseTo(1e-3, 6);
  });
});

describe("show: gradient statistics beside the activation's", () => {
  test("a saved gradient prints its file, target, norm and statistics under the activation's", async () => {
    const run = await readRun(TWO);
    const view = await showView(run.log, run.npz, "relu_1_2:2", run.gradsNpz);
    const text = renderShow(view, null, run.log.gradients?.target ?? null);
    const lines = text.split("\n");
    const at = lines.findIndex((l) => l.startsWith("  gradient"));
    expect(at).toBeGreaterThan(lines.findIndex((l) => l.startsWith("  array")));
    expect(lines.slice(at, at + 7)).toEqual([
      "  gradient      relu_1_2:2 in gradients.npz, 4 elements",
      "  target        the sum of the outputs",
      "  norm          0.5",
      "  min / max     -0.25 / 0.25",
      "  mean / std    0 / 0.25",
      "  nan / ±inf    0 / 0 +inf, 0 -inf",
      "  zeros         0 of 4",
    ]);
  });

  test("a pass the target does not depend on says it has no gradient (not zeros)", async () => {
    const run = await readRun(TWO);
    const view = await showView(run.log, run.npz, "tanh_1_4:1", run.gradsNpz);
    expect(view.kind === "pass" && view.grad_stats).toBeNull();
    expect(renderShow(view, null, { kind: "sum" })).toContain(
      "  gradient      none: the target does not depend on this pass",
    );
  });

  test("a pass whose gradient was not recorded says --layers left it out", async () => {
    const run = await readRun(TWO);
    const view = await showView(run.log, run.npz, "linear_3_5", run.gradsNpz);
    expect(renderShow(view, null, { kind: "sum" })).toContain(
      "  gradient      not saved (the extract's --layers left it out)",
    );
  });

  test("--json gives grad_stats per pass: the statistics of the gradient's array, null without one", async () => {
    const run = await readRun(TWO);
    const view = await showView(run.log, run.npz, "tanh_1_4", run.gradsNpz);
    if (view.kind !== "layer") throw new Error("tanh_1_4 is a layer");
    const [none, saved] = view.passes;
    expect(none?.grad_stats).toBeNull();
    expect(saved?.grad_stats).toMatchObject({ count: 4, nan: 0, zeros: 0, min: -4, max: 4 });
    expect(saved?.stats).not.toEqual(saved?.grad_stats);
  });

  test("a layer prints a gradient table: one row per pass, none and not saved in words", async () => {
    const run = await readRun(TWO);
    const view = await showView(run.log, run.npz, "tanh_1_4", run.gradsNpz);
    const text = renderShow(view, null, { kind: "sum" });
    expect(text).toContain("gradients of the sum of the outputs");
    const rows = text.split("\n").filter((l) => l.startsWith("tanh_1_4:"));
    expect(rows).toHaveLength(4); // two activation rows, two gradient rows
    expect(rows[2]).toMatch(/^tanh_1_4:1\s+none$/);
    expect(rows[3]).toMatch(/^tanh_1_4:2\s+8\s+-4\s+4\s+0\s+4\s+0\s+0\s+0$/);
  });

  test("a run without gradients: no grad_stats key, no gradient lines", async () => {
    const run = await readRun(OLD);
    expect(run.gradsNpz).toBeNull();
    const view = await showView(run.log, run.npz, "relu_1_2:2", run.gradsNpz);
    expect(Object.keys(view)).not.toContain("grad_stats");
    expect(renderShow(view, null, null)).not.toContain("gradient");
  });
});

describe("ls: --sort and the grad norm column", () => {
  const opts = { json: false, by: "pass" as const, modules: false, width: null };
  const labels = (text: string) =>
    text
      .split("\n")
      .slice(1)
      .map((l) => l.split(/\s+/)[0]);

  test("a run with gradients gets a grad norm column: the norm, none, or empty", async () => {
    const lines = (await ls(TWO, opts)).split("\n");
    expect(lines[0]).toMatch(/time ms\s+grad norm$/);
    const row = (label: string) => lines.find((l) => l.startsWith(`${label} `)) as string;
    expect(row("sigmoid_1_6")).toMatch(/\s100$/);
    expect(row("tanh_1_4:1")).toMatch(/\snone$/);
    expect(row("linear_3_5")).toMatch(/\d\.\d{3}$/); // its time, then nothing
  });

  test("--sort grad-norm: largest first, passes without a norm last in execution order", async () => {
    const order = labels(await ls(TWO, { ...opts, sort: "grad-norm" }));
    expect(order.slice(0, 4)).toEqual(["sigmoid_1_6", "output_1", "tanh_1_4:2", "linear_1_1:2"]);
    expect(order.slice(-4)).toEqual(["relu_1_2:1", "input_1", "tanh_1_4:1", "linear_3_5"]);
  });

  test("--sort time and nbytes: largest first; order keeps execution order", async () => {
    const byTime = two.passes.map((p) => p.time_ms);
    const timed = labels(await ls(TWO, { ...opts, sort: "time" })).map(
      (l) => pass(two, l as string).time_ms,
    );
    expect(timed).toEqual([...byTime].sort((a, b) => b - a));
    const cnn = (await readRun(CNN)).log;
    const sized = labels(await ls(CNN, { ...opts, sort: "nbytes" })).map(
      (l) => pass(cnn, l as string).nbytes,
    );
    expect(sized).toEqual(cnn.passes.map((p) => p.nbytes).sort((a, b) => b - a));
    expect(labels(await ls(TWO, { ...opts, sort: "order" }))).toEqual(
      two.passes.map((p) => p.label),
    );
  });

  test("--json keeps the log's objects, sorted", async () => {
    const json = JSON.parse(await ls(TWO, { ...opts, json: true, sort: "grad-norm" })) as Pass[];
    expect(json[0]).toEqual(pass(two, "sigmoid_1_6"));
    expect(json.map((p) => p.label).sort()).toEqual(two.passes.map((p) => p.label).sort());
  });

  test("--by layer: a layer's norm is its passes' largest, and layers sort by it", async () => {
    const text = await ls(TWO, { ...opts, by: "layer", sort: "grad-norm" });
    expect(labels(text).slice(0, 3)).toEqual(["sigmoid_1_6", "output_1", "tanh_1_4"]);
    expect(text.split("\n").find((l) => l.startsWith("tanh_1_4 "))).toMatch(/\s8$/);
    const json = JSON.parse(await ls(TWO, { ...opts, by: "layer", json: true, sort: "time" }));
    expect(json).toHaveLength(two.layers.length);
  });

  test("a run without gradients: no grad norm column; --sort grad-norm is a usage error naming --grads", async () => {
    expect((await ls(OLD, opts)).split("\n")[0]).not.toContain("grad norm");
    const err = await thrown(() => ls(OLD, { ...opts, sort: "grad-norm" }));
    expect(err.exitCode).toBe(2);
    expect(err.message).toContain("has no gradients");
    expect(err.hint).toContain("--grads");
  });

  test("an unknown --sort key, or --sort with --modules, is a usage error", async () => {
    expect((await thrown(() => ls(TWO, { ...opts, sort: "size" }))).message).toContain(
      "order, time, nbytes, grad-norm",
    );
    const err = await thrown(() => ls(TWO, { ...opts, modules: true, sort: "time" }));
    expect(err.message).toContain("--modules");
  });
});

describe("shade: a log scale over the finite norms, light to dark", () => {
  test("shadeOf: min 0, max 1, the geometric middle one half; zero the lightest", () => {
    const scale = { min: 1e-3, max: 10, zeros: true };
    expect(shadeOf(1e-3, scale)).toBe(0);
    expect(shadeOf(10, scale)).toBe(1);
    expect(shadeOf(0.1, scale)).toBeCloseTo(0.5, 10);
    expect(shadeOf(0, scale)).toBe(0);
    expect(shadeOf(3, { min: 3, max: 3, zeros: false })).toBe(0.5);
  });

  test("normScale ignores nulls and non-finite norms, and zeros for its minimum", () => {
    expect(normScale([null, 0, 2, Number.POSITIVE_INFINITY, 0.5])).toEqual({
      min: 0.5,
      max: 2,
      zeros: true,
    });
    expect(normScale([null, null])).toBeNull();
  });

  test("rampColor darkens along the ramp and stays off white at its light end", () => {
    const lum = (hex: string) =>
      [1, 3, 5].reduce((s, i) => s + Number.parseInt(hex.slice(i, i + 2), 16), 0);
    const steps = [0, 0.25, 0.5, 0.75, 1].map((t) => lum(rampColor(t)));
    for (let i = 1; i < steps.length; i++)
      expect(steps[i] as number).toBeLessThan(steps[i - 1] as number);
    expect(rampColor(0)).not.toBe("#ffffff");
    expect(rampColor(0)).toMatch(/^#[0-9a-f]{6}$/);
  });

  test("a group's norm is its passes' largest finite one; none and not recorded give null", () => {
    expect(maxGradNorm([pass(two, "relu_1_2:1"), pass(two, "relu_1_2:2")])).toBeCloseTo(0.5, 6);
    expect(maxGradNorm([pass(two, "tanh_1_4:1"), pass(two, "linear_3_5")])).toBeNull();
  });
});

/** The DOT's nodes by id, with their attributes (the legend's cluster included). */
function dotNodes(dot: string): Map<string, NodeModel> {
  const out = new Map<string, NodeModel>();
  const walk = (g: GraphBaseModel) => {
    for (const n of g.nodes) out.set(n.id, n);
    for (const sg of g.subgraphs) walk(sg);
  };
  walk(fromDot(dot));
  return out;
}
const fill = (n: NodeModel | undefined) => n?.attributes.get("fillcolor") as string | undefined;

describe("graph --color grad-norm: nodes shaded by gradient norm, with a legend", () => {
  test("unrolled: the largest norm gets the darkest fill, the smallest the lightest, no gradient white", () => {
    const { view, dot } = graphDot(two, { mode: "unrolled", color: "grad-norm" });
    expect(view.shading?.scale).toMatchObject({
      min: normOf("input_1"),
      max: normOf("sigmoid_1_6"),
    });
    const nodes = dotNodes(dot);
    expect(fill(nodes.get("sigmoid_1_6"))).toBe(rampColor(1));
    expect(fill(nodes.get("input_1"))).toBe(rampColor(0));
    const mid = shadeOf(
      normOf("linear_1_1:3"),
      view.shading?.scale ?? { min: 1, max: 1, zeros: false },
    );
    expect(fill(nodes.get("linear_1_1:3"))).toBe(rampColor(mid));
    // tanh_1_4:1 (none) and linear_3_5 (not recorded) keep the plain op's white, marked no-grad
    for (const id of ["tanh_1_4:1", "linear_3_5"]) {
      expect(fill(nodes.get(id))).toBeUndefined(); // the node default: #ffffff
      expect(nodes.get(id)?.attributes.get("class")).toContain("no-grad");
    }
    expect(view.shading?.unshaded).toBe(2);
  });

  test("rolled: a layer's node takes the largest norm of its passes", () => {
    const { view } = graphDot(two, { mode: "rolled", color: "grad-norm" });
    const node = (id: string) => view.nodes.find((n) => n.id === id);
    expect(node("linear_1_1")?.gradNorm).toBeCloseTo(5, 4);
    expect(node("tanh_1_4")?.gradNorm).toBeCloseTo(8, 4); // pass 1 has none
    expect(node("linear_3_5")?.gradNorm).toBeNull();
    expect(node("tanh_1_4")?.tooltip).toContain("grad norm 8 (largest)");
    expect(node("linear_3_5")?.tooltip).toContain("gradient not recorded");
  });

  test("the legend states the log scale, min and max, and that unshaded nodes have no gradient", () => {
    const { dot } = graphDot(two, { mode: "unrolled", color: "grad-norm" });
    const g = fromDot(dot);
    const legend = g.subgraphs.find((sg) => sg.id === LEGEND_CLUSTER);
    expect(legend?.get("label")).toBe("gradient norm (log scale)");
    const texts = legend?.nodes.map((n) => n.attributes.get("label")) ?? [];
    expect(texts[0]).toMatch(/^min 0\.001\d*$/);
    expect(texts[4]).toMatch(/^max 100(\.\d+)?$/);
    expect(texts[5]).toBe("no gradient · 2 nodes");
    expect(fill(legend?.nodes[0])).toBe(rampColor(0));
    expect(fill(legend?.nodes[4])).toBe(rampColor(1));
  });

  test("folded modules (--depth 0) shade by the largest norm inside", () => {
    const cnn = JSON.parse(readFileSync(path.join(CNN, "log.json"), "utf8")) as RunLog;
    const { view } = graphDot(cnn, { mode: "rolled", depth: 0, color: "grad-norm" });
    const folded = view.nodes.filter((n) => n.kind === "module");
    expect(folded.length).toBeGreaterThan(0);
    for (const n of folded) expect(n.gradNorm).toBe(maxGradNorm(n.passes.map((l) => pass(cnn, l))));
  });

  test("without --color the DOT of a gradient run is the DOT of the same run without gradients", async () => {
    const old = JSON.parse(readFileSync(path.join(OLD, "log.json"), "utf8")) as RunLog;
    for (const mode of ["rolled", "unrolled"] as const)
      expect(graphDot(two, { mode }).dot).toBe(graphDot(old, { mode }).dot);
  });

  test("a run without gradients: --color grad-norm is a usage error naming --grads", async () => {
    const old = JSON.parse(readFileSync(path.join(OLD, "log.json"), "utf8")) as RunLog;
    const err = await thrown(() => graphDot(old, { color: "grad-norm" }));
    expect(err.exitCode).toBe(2);
    expect(err.hint).toContain("--grads");
  });
});

describe("the CLI: flags, exit codes, --npy --grad", () => {
  test("show --npy --grad streams the gradient's .npy, numpy reads the planned values", async () => {
    const res = await torchlensBytes(["show", TWO, "tanh_1_4:2", "--npy", "--grad"]);
    expect(Buffer.from(res.stderr).toString()).toBe("");
    expect(res.exitCode).toBe(0);
    const file = path.join(tmp.dir, "g.npy");
    writeFileSync(file, res.stdout);
    const np = await python([
      "-c",
      "import sys, numpy as np; a = np.load(sys.argv[1]); print(a.shape, float(np.linalg.norm(a)))",
      file,
    ]);
    expect(np.stdout.trim()).toMatch(/^\(1, 4\) 8\.0+\d*$/);
  });

  test("show --npy --grad on a pass without a gradient, or a run without gradients, is a usage error", async () => {
    const none = await torchlensBytes(["show", TWO, "tanh_1_4:1", "--npy", "--grad"]);
    expect(none.exitCode).toBe(2);
    expect(Buffer.from(none.stderr).toString()).toContain("does not depend on it");
    const old = await torchlens(["show", OLD, "output_1", "--npy", "--grad"]);
    expect(old.exitCode).toBe(2);
    expect(old.stderr).toContain("--grads");
    const alone = await torchlens(["show", TWO, "output_1", "--grad"]);
    expect(alone.exitCode).toBe(2);
    expect(alone.stderr).toContain("--grad goes with --npy");
  });

  test("show --json on a gradient run carries grad_stats", async () => {
    const res = await torchlens(["show", TWO, "output_1", "--json"]);
    expect(res.exitCode).toBe(0);
    expect(JSON.parse(res.stdout).grad_stats).toMatchObject({ count: 4 });
  });

  test("ls --sort grad-norm on a run without gradients exits 2 with one paragraph naming --grads", async () => {
    const res = await torchlens(["ls", OLD, "--sort", "grad-norm"]);
    expect(res.exitCode).toBe(2);
    expect(res.stdout).toBe("");
    expect(res.stderr).toMatch(/^torchlens: error: --sort grad-norm: .* has no gradients/);
    expect(res.stderr).toContain("fix: re-extract with --grads");
  });

  test("graph --color: grad-norm draws; another value, or a run without gradients, exits 2", async () => {
    const ok = await torchlens(["graph", TWO, "--color", "grad-norm", "--unrolled", "-o", "-"]);
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout).toContain(LEGEND_CLUSTER);
    const bad = await torchlens(["graph", TWO, "--color", "time", "-o", "-"]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain("grad-norm");
    const old = await torchlens(["graph", OLD, "--color", "grad-norm", "-o", "-"]);
    expect(old.exitCode).toBe(2);
    expect(old.stderr).toContain("fix: re-extract with --grads");
  });

  test("graph --color grad-norm lays out as SVG (the legend is valid DOT for Graphviz)", async () => {
    const out = path.join(tmp.dir, "g.svg");
    const res = await torchlens(["graph", TWO, "--color", "grad-norm", "-o", out]);
    expect(res.exitCode).toBe(0);
    const svg = readFileSync(out, "utf8");
    expect(svg).toContain("gradient norm (log scale)");
    expect(svg).toContain(rampColor(1));
  });
});
