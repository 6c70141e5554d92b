/**
 * The graph: the view and DOT builders on logs built from recorded agent streams, then
 * `torchlens graph` through the real CLI on real runs of every fixture (SVG parsed as XML).
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { Graphviz } from "@hpcc-js/wasm-graphviz";
import { fromDot, type GraphBaseModel } from "ts-graphviz";
import { graphDot } from "../../src/cli/graph.js";
import { TorchlensError } from "../../src/errors.js";
import { LARGE, layoutAttributes, toDotText } from "../../src/graph/dot.js";
import {
  buildView,
  edgeLabel,
  type GraphView,
  passRanges,
  strongComponents,
  type ViewOptions,
} from "../../src/graph/view.js";
import { buildLog } from "../../src/log/build.js";
import type { Layer, Pass, RawRun, RunLog } from "../../src/log/types.js";
import { fixture, python, ROOT, tempDir, torchlens } from "../helpers/cli.js";
import { fixtureRunsHere } from "../helpers/torch.js";

function log(name: string): RunLog {
  const raw: RawRun = JSON.parse(
    readFileSync(new URL(`../fixtures/raw/${name}.json`, import.meta.url), "utf8"),
  );
  return buildLog(raw, () => true);
}
const rolled = (l: RunLog, o: Partial<ViewOptions> = {}) =>
  buildView(l, { mode: "rolled", depth: null, ...o });
const unrolled = (l: RunLog, o: Partial<ViewOptions> = {}) =>
  buildView(l, { mode: "unrolled", depth: null, ...o });
const node = (v: GraphView, id: string) => {
  const n = v.nodes.find((x) => x.id === id);
  if (!n) throw new Error(`no node ${id} among ${v.nodes.map((x) => x.id).join(", ")}`);
  return n;
};
const edge = (v: GraphView, tail: string, head: string) => {
  const e = v.edges.find((x) => x.tail === tail && x.head === head);
  if (!e) throw new Error(`no edge ${tail} -> ${head}`);
  return e;
};
const backEdges = (v: GraphView) =>
  v.edges.filter((e) => e.back).map((e) => [e.tail, e.head, e.label]);
/** Distinct (parent, child) pairs of the log, mapped through `key`. */
function distinctEdges(l: RunLog, key: (label: string) => string): number {
  return new Set(l.edges.map(([a, b]) => `${key(a)} ${key(b)}`)).size;
}

const RAW = ["branching_mlp", "cnn", "dynamic_loop", "lookalike", "lstm_gru", "multi_io"].concat([
  "nested_loops",
  "noisy",
  "shared_branches",
  "transformer",
  "two_loops",
]);

describe("the view: unrolled is one node per pass, rolled one per layer", () => {
  test.each(RAW)("%s: node and edge counts follow the log", (name) => {
    const l = log(name);
    const layerOf = new Map(l.passes.map((p) => [p.label, p.layer]));
    const u = unrolled(l);
    const r = rolled(l);
    expect(u.nodes.map((n) => n.id)).toEqual(l.passes.map((p) => p.label));
    expect(r.nodes.map((n) => n.id)).toEqual(l.layers.map((x) => x.label));
    expect(u.edges).toHaveLength(distinctEdges(l, (x) => x));
    expect(r.edges).toHaveLength(distinctEdges(l, (x) => layerOf.get(x) as string));
    expect(u.edges.some((e) => e.back)).toBe(false); // execution order has no cycles
    // every edge joins drawn nodes
    for (const v of [u, r]) {
      const ids = new Set(v.nodes.map((n) => n.id));
      for (const e of v.edges) expect(ids.has(e.tail) && ids.has(e.head)).toBe(true);
    }
  });

  test("two loops: the rolled graph folds each loop into a loop-back edge and has fewer edges", () => {
    const l = log("two_loops");
    const u = unrolled(l);
    const r = rolled(l);
    expect(u.edges).toHaveLength(13);
    expect(r.edges).toHaveLength(9);
    expect(node(r, "linear_1_1").lines[0]).toBe("linear_1_1 ×3");
    expect(node(r, "linear_2_3").lines[0]).toBe("linear_2_3 ×2");
    expect(node(r, "linear_3_5").lines[0]).toBe("linear_3_5"); // a loop that ran once
    expect(backEdges(r)).toEqual([
      ["relu_1_2", "linear_1_1", "1→2, 2→3"],
      ["tanh_1_4", "linear_2_3", "1→2"],
    ]);
    // only the first pass takes the input; only the last leaves the loop
    expect(edge(r, "input_1", "linear_1_1").label).toBe("in 1");
    expect(edge(r, "relu_1_2", "linear_2_3").label).toBe("3→1");
    expect(edge(r, "linear_1_1", "relu_1_2").label).toBeNull(); // pass i feeds pass i
  });

  test("nested loops: inner and outer loop-back edges, labelled with the passes they join", () => {
    const l = log("nested_loops");
    const u = unrolled(l);
    const r = rolled(l);
    expect(r.edges.length).toBeLessThan(u.edges.length);
    expect(r.nodes.map((n) => n.lines[0])).toEqual([
      "input_1",
      "linear_1_1 ×6",
      "relu_1_2 ×6",
      "mul_1_3 ×2",
      "add_1_4 ×2",
      "output_1",
    ]);
    expect(backEdges(r)).toEqual([
      ["relu_1_2", "linear_1_1", "1–2, 4–5 → 2–3, 5–6"],
      ["add_1_4", "linear_1_1", "1→4"],
    ]);
    expect(edge(r, "relu_1_2", "mul_1_3").label).toBe("3→1, 6→2");
    expect(edge(r, "add_1_4", "output_1").label).toBe("out 2");
  });

  test("a data-dependent loop: recurrence and a self-loop are back edges; dead ends are muted", () => {
    const r = rolled(log("dynamic_loop"));
    expect(backEdges(r)).toEqual([
      ["tanh_1_8", "linear_2_6", "1→2, 2→3"],
      ["add_2_9", "add_2_9", "1→2, 2→3"],
    ]);
    expect(r.nodes.filter((n) => n.dead).map((n) => n.id)).toEqual([
      "frobenius_norm_1_4",
      "lt_1_5",
      "frobenius_norm_2_10",
      "lt_2_11",
      "sum_1_12",
      "gt_1_13",
    ]);
    expect(edge(r, "add_2_9", "sum_1_12")).toMatchObject({ dead: true, label: "out 3" });
    expect(edge(r, "add_2_9", "mul_1_14")).toMatchObject({ dead: false, label: "out 3" });
    const dot = toDotText(r, { direction: "TB" });
    expect(dot).toMatch(
      /"lt_1_5" \[[^\]]*style = "rounded,filled,dashed";[^\]]*class = "op dead";/,
    );
    expect(dot).toMatch(/"tanh_1_8" -> "linear_2_6" \[[^\]]*constraint = false;/);
  });

  test("a dtype other than the run's usual one is shown; the usual one is not repeated", () => {
    const r = rolled(log("dynamic_loop"));
    expect(node(r, "lt_1_5").lines[1]).toBe("__lt__ · () · bool");
    expect(node(r, "tanh_1_8").lines[1]).toBe("tanh · 1x8");
  });
});

describe("modules as clusters", () => {
  test("a module shared by two branches: a cluster per call unrolled, one per address rolled", () => {
    const l = log("shared_branches");
    const u = unrolled(l);
    expect(u.clusters.map((c) => [c.id, c.parent, c.label])).toEqual(
      expect.arrayContaining([
        ["cluster_shared:1", null, "shared:1 · Sequential"],
        ["cluster_shared:2", null, "shared:2 · Sequential"],
        ["cluster_shared.0:1", "cluster_shared:1", "shared.0:1 · Linear"],
        ["cluster_shared.0:2", "cluster_shared:2", "shared.0:2 · Linear"],
        ["cluster_split_a:1", null, "split_a · Linear"], // called once: no call number
      ]),
    );
    expect(node(u, "linear_2_2:1").cluster).toBe("cluster_shared.0:1");
    expect(node(u, "linear_2_2:2").cluster).toBe("cluster_shared.0:2");

    const r = rolled(l);
    expect(r.clusters.map((c) => [c.id, c.parent, c.label])).toEqual(
      expect.arrayContaining([
        ["cluster_shared", null, "shared · Sequential · 2 calls"],
        ["cluster_shared.0", "cluster_shared", "shared.0 · Linear · 2 calls"],
        ["cluster_shared.1", "cluster_shared", "shared.1 · ReLU · 2 calls"],
      ]),
    );
    expect(r.clusters.filter((c) => c.id.startsWith("cluster_shared"))).toHaveLength(4);
    expect(node(r, "linear_2_2").lines[0]).toBe("linear_2_2 ×2");
    // the second branch feeds the shared layers' second pass; no cycle, so not a back edge
    expect(edge(r, "linear_4_6", "linear_2_2")).toMatchObject({ back: false, label: "in 2" });
    expect(edge(r, "linear_3_4", "tanh_1_7").label).toBe("out 2");
  });

  test("nested modules nest as clusters, parents before children", () => {
    const v = unrolled(log("cnn"));
    const features = v.clusters.filter((c) => c.id.startsWith("cluster_features"));
    expect(features[0]).toMatchObject({ id: "cluster_features:1", parent: null, level: 1 });
    expect(features.slice(1).every((c) => c.parent === "cluster_features:1" && c.level === 2)).toBe(
      true,
    );
    expect(node(v, "conv2d_1_1").cluster).toBe("cluster_features.0:1");
    expect(node(v, "buffer_1").cluster).toBe("cluster_features.1:1");
    const seen = new Set<string | null>([null]);
    for (const c of v.clusters) {
      expect(seen.has(c.parent)).toBe(true);
      seen.add(c.id);
    }
    // as DOT: the conv node sits inside features.0 inside features
    const model = fromDot(toDotText(v, { direction: "TB" }));
    const outer = model.subgraphs.find((s) => s.id === "cluster_features:1");
    const inner = outer?.subgraphs.find((s) => s.id === "cluster_features.0:1");
    expect(inner?.nodes.map((n) => n.id)).toEqual(["conv2d_1_1"]);
  });

  test("--depth folds deeper modules into one node each, with class and a summary", () => {
    const l = log("cnn");
    const d0 = rolled(l, { depth: 0 });
    expect(d0.clusters).toEqual([]);
    expect(d0.nodes.map((n) => n.id)).toEqual([
      "input_1",
      "module:features",
      "module:classifier",
      "output_1",
    ]);
    expect(node(d0, "module:features")).toMatchObject({
      kind: "module",
      lines: ["features", "Sequential", "12 passes · 1.4k params", "out 1x16x8x8"],
    });
    expect(d0.edges.map((e) => [e.tail, e.head])).toEqual([
      ["input_1", "module:features"],
      ["module:features", "module:classifier"],
      ["module:classifier", "output_1"],
    ]);

    const d1 = unrolled(l, { depth: 1 });
    expect(d1.clusters.map((c) => c.id)).toEqual(["cluster_features:1", "cluster_classifier:1"]);
    expect(node(d1, "module:features.1:1")).toMatchObject({
      cluster: "cluster_features:1",
      lines: ["features.1", "BatchNorm2d", "3 passes · 16 params", "out 1x8x32x32"],
    });
    expect(d1.nodes).toHaveLength(15);
    // deep enough to fold nothing: the full graph
    expect(unrolled(l, { depth: 2 }).nodes).toHaveLength(l.num_passes);
  });

  test("--depth on a loop: a module called several times folds into one node rolled, one per call unrolled", () => {
    const l = log("dynamic_loop");
    const r = rolled(l, { depth: 0 });
    expect(node(r, "module:cell").lines).toEqual([
      "cell",
      "Linear",
      "3 calls · 3 passes · 72 params",
      "out 1x8",
    ]);
    expect(backEdges(r)).toContainEqual(["tanh_1_8", "module:cell", null]);
    const u = unrolled(l, { depth: 0 });
    expect(u.nodes.filter((n) => n.kind === "module").map((n) => n.id)).toEqual([
      "module:encode:1",
      "module:cell:1",
      "module:cell:2",
      "module:cell:3",
      "module:head:1",
    ]);
    expect(node(u, "module:cell:2").lines[0]).toBe("cell:2");
  });

  test("a shared module folded at depth 0 keeps its recurrence as a self-loop only across calls", () => {
    const l = log("shared_branches");
    const r = rolled(l, { depth: 0 });
    // the shared Sequential's internal edges are gone; nothing feeds one call from the other
    expect(r.edges.some((e) => e.tail === "module:shared" && e.head === "module:shared")).toBe(
      false,
    );
    const lstm = rolled(log("lstm_gru"), { depth: 0 });
    expect(backEdges(lstm)).toEqual([["module:cell", "module:cell", null]]);
  });
});

describe("node kinds, highlight, DOT", () => {
  test("inputs, outputs, parameterised ops, buffers, internal sources and plain ops look different", () => {
    const kinds = (name: string) =>
      Object.fromEntries(unrolled(log(name)).nodes.map((n) => [n.id, n.kind]));
    expect(kinds("cnn")).toMatchObject({
      input_1: "input",
      conv2d_1_1: "param_op",
      buffer_1: "buffer",
      relu_1_3: "op",
      output_1: "output",
    });
    expect(kinds("noisy")).toMatchObject({ tensor_1_5: "internal", randn_like_1_2: "op" });
    const dot = toDotText(unrolled(log("cnn")), { direction: "LR" });
    // each node's look, its own attributes over the graph's node defaults
    const model = fromDot(dot);
    const nodes = [
      model,
      ...model.subgraphs.flatMap(function all(s): GraphBaseModel[] {
        return [s, ...s.subgraphs.flatMap(all)];
      }),
    ].flatMap((g) => [...g.nodes]);
    const look = (id: string) => {
      const n = nodes.find((x) => x.id === id);
      const get = (k: "shape" | "style" | "fillcolor") =>
        n?.attributes.get(k) ?? model.attributes.node.get(k);
      return `${get("shape")} ${get("style")} ${get("fillcolor")}`;
    };
    expect(["input_1", "conv2d_1_1", "buffer_1", "relu_1_3", "output_1"].map(look)).toEqual([
      "oval filled #c8e6c9",
      "box filled #cfe2fb",
      "cylinder filled #fff3c4",
      "box rounded,filled #ffffff",
      "oval filled #ffcdd2",
    ]);
    expect(dot).toContain('rankdir = "LR";');
  });

  test("nodes show parameter shapes and the input/output paths", () => {
    const v = unrolled(log("cnn"));
    expect(node(v, "conv2d_1_1").lines).toEqual([
      "conv2d_1_1",
      "conv2d · 1x8x32x32",
      "params 8x3x3x3, 8",
    ]);
    expect(node(v, "input_1").lines[1]).toBe("args.0 · 1x3x32x32");
    expect(node(v, "buffer_1").lines[1]).toMatch(/^features\.1\.running_(mean|var) · 8$/);
  });

  test("--layers highlights the nodes holding a selected pass", () => {
    const l = log("two_loops");
    const { view, dot } = graphDot(l, { layers: ["relu_1_2:2", "b"] });
    expect(view.nodes.filter((n) => n.highlighted).map((n) => n.id)).toEqual([
      "relu_1_2",
      "linear_2_3",
    ]);
    expect(dot).toMatch(/"relu_1_2" \[[^\]]*penwidth = 3;/);
    const u = graphDot(l, { mode: "unrolled", layers: ["relu_1_2:2"] }).view;
    expect(u.nodes.filter((n) => n.highlighted).map((n) => n.id)).toEqual(["relu_1_2:2"]);
  });

  test("an unknown selector is a usage error naming close matches", () => {
    try {
      graphDot(log("two_loops"), { layers: ["tahn"] });
      throw new Error("no error");
    } catch (err) {
      expect(err).toBeInstanceOf(TorchlensError);
      expect((err as TorchlensError).exitCode).toBe(2);
      expect((err as TorchlensError).message).toMatch(/--layers: "tahn".*close: tanh/);
    }
  });

  test("the DOT parses back with every node and edge", () => {
    for (const name of RAW) {
      for (const mode of ["rolled", "unrolled"] as const) {
        const { view, dot } = graphDot(log(name), { mode });
        const model = fromDot(dot);
        const count = (g: GraphBaseModel): [number, number] =>
          g.subgraphs.reduce<[number, number]>(
            ([n, e], s) => {
              const [a, b] = count(s);
              return [n + a, e + b];
            },
            [g.nodes.length, g.edges.length],
          );
        expect(count(model)).toEqual([view.nodes.length, view.edges.length]);
      }
    }
  });

  test("labels with quotes or backslashes stay literal (checked by Graphviz itself)", async () => {
    const l = log("two_loops");
    l.model.class = 'Odd"Name\\N';
    const graphviz = await Graphviz.load();
    const svg = graphviz.dot(graphDot(l).dot, "svg");
    expect(svg).toContain(">Odd&quot;Name\\N · rolled · 8 nodes</text>");
  });

  test("large graphs (nodes and edges together) get capped layout settings", () => {
    expect(layoutAttributes(LARGE - 100, 100)).toEqual({});
    expect(layoutAttributes(LARGE - 100, 101)).toMatchObject({ nslimit: 2, nslimit1: 2 });
    expect(layoutAttributes(100, LARGE)).toMatchObject({ mclimit: expect.any(Number) });
  });

  test("a graph of 5000 passes becomes DOT (past ts-graphviz's default AST cap)", () => {
    const l = log("two_loops");
    const template = l.passes.find((p) => p.label === "sigmoid_1_6") as Pass;
    const passes: Pass[] = Array.from({ length: 5000 }, (_, i) => ({
      ...template,
      id: i + 1,
      label: `sigmoid_${i + 1}_${i + 1}`,
      layer: `sigmoid_${i + 1}_${i + 1}`,
      parents: i ? [`sigmoid_${i}_${i}`] : [],
      children: i < 4999 ? [`sigmoid_${i + 2}_${i + 2}`] : [],
    }));
    const big: RunLog = {
      ...l,
      passes,
      layers: passes.map((p) => ({ ...l.layers[0], label: p.label, passes: [p.label] }) as Layer),
      edges: passes.slice(1).map((p) => [p.parents[0] as string, p.label, "0"]),
    };
    const { view, dot } = graphDot(big, { mode: "unrolled" });
    expect(view.nodes).toHaveLength(5000);
    expect(dot).toContain("nslimit = 2;");
    expect(dot.match(/ -> /g)).toHaveLength(4999);
  });
});

describe("helpers", () => {
  test("pass ranges", () => {
    expect(passRanges([5, 1, 2, 3, 7, 8])).toBe("1–3, 5, 7–8");
    expect(passRanges([4])).toBe("4");
  });

  test("edge labels say which passes an edge joins, and nothing when it joins them all", () => {
    expect(edgeLabel([[1, 1]], 1, 1)).toBeNull();
    expect(
      edgeLabel(
        [
          [1, 1],
          [1, 2],
          [1, 3],
        ],
        1,
        3,
      ),
    ).toBeNull();
    expect(edgeLabel([[1, 1]], 1, 3)).toBe("in 1");
    expect(edgeLabel([[3, 1]], 3, 1)).toBe("out 3");
    expect(
      edgeLabel(
        [
          [1, 1],
          [2, 1],
        ],
        2,
        1,
      ),
    ).toBeNull();
    expect(
      edgeLabel(
        [
          [1, 1],
          [2, 2],
        ],
        2,
        2,
      ),
    ).toBeNull();
    expect(
      edgeLabel(
        [
          [1, 2],
          [2, 3],
        ],
        3,
        3,
      ),
    ).toBe("1→2, 2→3");
    const shifted = Array.from({ length: 7 }, (_, i): [number, number] => [i + 1, i + 2]);
    expect(edgeLabel(shifted, 8, 8)).toBe("1–7 → 2–8");
    expect(
      edgeLabel(
        [
          [1, 1],
          [1, 2],
          [2, 4],
          [3, 4],
        ],
        3,
        4,
      ),
    ).toBe("out 1–3, in 1–2, 4");
  });

  test("strongly connected components", () => {
    const c = strongComponents(
      ["a", "b", "c", "d", "e"],
      [
        { tail: "a", head: "b" },
        { tail: "b", head: "c" },
        { tail: "c", head: "b" },
        { tail: "c", head: "d" },
        { tail: "e", head: "e" },
      ],
    );
    expect(c.get("b")).toBe(c.get("c"));
    expect(new Set([c.get("a"), c.get("b"), c.get("d"), c.get("e")]).size).toBe(4);
    // a long chain does not overflow the stack
    const ids = Array.from({ length: 100_000 }, (_, i) => `n${i}`);
    const chain = ids.slice(1).map((id, i) => ({ tail: ids[i] as string, head: id }));
    expect(new Set(strongComponents(ids, chain).values()).size).toBe(ids.length);
  });
});

// --- through the real CLI -------------------------------------------------------------------

/** Every model in fixtures/ (make_*.py write the saved inputs; they are not models). */
const FIXTURES = readdirSync(path.join(ROOT, "fixtures"))
  .filter((f) => f.endsWith(".py") && !f.startsWith("make_"))
  .map((f) => f.replace(/\.py$/, ""))
  .filter(fixtureRunsHere) // torch2_*.py only under torch 2
  .sort();

interface SvgFacts {
  file: string;
  root: string;
  nodes: number;
  edges: number;
  clusters: number;
  error?: string;
}

/** Parses SVG files with Python's expat (a strict XML parser) and counts Graphviz's groups. */
async function parseSvgs(files: string[]): Promise<SvgFacts[]> {
  const script = `
import json, sys
import xml.etree.ElementTree as ET
NS = "{http://www.w3.org/2000/svg}"
out = []
for f in sys.argv[1:]:
    try:
        root = ET.parse(f).getroot()
    except ET.ParseError as e:
        out.append({"file": f, "root": "", "nodes": 0, "edges": 0, "clusters": 0, "error": str(e)})
        continue
    classes = [g.get("class", "").split() for g in root.iter(NS + "g")]
    count = lambda k: sum(1 for c in classes if c[:1] == [k])
    out.append({"file": f, "root": root.tag, "nodes": count("node"), "edges": count("edge"), "clusters": count("cluster")})
print(json.dumps(out))`;
  const r = await python(["-c", script, ...files]);
  if (r.exitCode !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

describe("torchlens graph (real runs of every fixture)", () => {
  const tmp = tempDir("torchlens-graph-");
  const run = (name: string) => path.join(tmp.dir, name);
  const logOf = (name: string): RunLog =>
    JSON.parse(readFileSync(path.join(run(name), "log.json"), "utf8"));
  afterAll(() => tmp.cleanup());

  beforeAll(async () => {
    expect(FIXTURES.length).toBeGreaterThanOrEqual(11);
    await Promise.all(
      FIXTURES.map(async (name) => {
        const input = fixture(`${name}_input.pt`);
        const r = await torchlens([
          "extract",
          fixture(`${name}.py`),
          ...(existsSync(input) ? ["--input", input] : []), // else the file's example_input()
          "-o",
          run(name),
        ]);
        if (r.exitCode !== 0) throw new Error(`extract ${name} failed: ${r.stderr}`);
      }),
    );
  }, 180_000);

  test("rolled and unrolled SVGs of every fixture are well-formed, one node group per node", async () => {
    const made = FIXTURES.flatMap((name) =>
      ["rolled", "unrolled"].map((mode) => ({
        name,
        mode,
        file: path.join(run(name), mode === "unrolled" ? "graph-unrolled.svg" : "graph.svg"),
      })),
    );
    // a few CLI processes at a time: each spends most of its time starting up
    const queue = [...made];
    const worker = async () => {
      for (let m = queue.shift(); m; m = queue.shift()) {
        const r = await torchlens([
          "graph",
          run(m.name),
          ...(m.mode === "unrolled" ? ["--unrolled"] : []),
        ]);
        expect({ ...m, stderr: r.stderr, code: r.exitCode }).toMatchObject({ code: 0 });
        expect(r.stderr).toMatch(new RegExp(`drew the ${m.mode} graph: \\d+ nodes`));
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    const facts = await parseSvgs(made.map((m) => m.file));
    for (const [i, m] of made.entries()) {
      const l = logOf(m.name);
      const layerOf = new Map(l.passes.map((p) => [p.label, p.layer]));
      const f = facts[i] as SvgFacts;
      const unrolledMode = m.mode === "unrolled";
      const clusters = new Set(
        l.passes.flatMap((p) =>
          unrolledMode ? p.modules : p.modules.map((c) => c.slice(0, c.lastIndexOf(":"))),
        ),
      );
      expect({ ...m, ...f }).toEqual({
        ...m,
        file: m.file,
        root: "{http://www.w3.org/2000/svg}svg",
        nodes: unrolledMode ? l.num_passes : l.num_layers,
        edges: distinctEdges(l, unrolledMode ? (x) => x : (x) => layerOf.get(x) as string),
        clusters: clusters.size,
      });
    }
  }, 240_000);

  test("-o - writes DOT to stdout and nothing to stderr; -o x.dot writes DOT; --depth folds", async () => {
    const r = await torchlens([
      "graph",
      run("cnn"),
      "-o",
      "-",
      "--depth",
      "1",
      "--direction",
      "lr",
    ]);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^digraph "torchlens" \{/);
    expect(r.stdout).toContain('rankdir = "LR";');
    expect(r.stdout).toContain('"module:features.0" [');
    const dotFile = path.join(tmp.dir, "cnn.dot");
    const d = await torchlens(["graph", run("cnn"), "-o", dotFile, "--depth", "1"]);
    expect(d.exitCode).toBe(0);
    expect(readFileSync(dotFile, "utf8").trimEnd()).toBe(
      r.stdout.replace('rankdir = "LR"', 'rankdir = "TB"'),
    );
  });

  test("--layers highlights; an SVG path gets SVG with the highlighted class", async () => {
    const out = path.join(tmp.dir, "loop.svg");
    const r = await torchlens(["graph", run("dynamic_loop"), "-o", out, "--layers", "tanh"]);
    expect(r.exitCode).toBe(0);
    const svg = readFileSync(out, "utf8");
    expect(svg).toContain('class="node op highlighted"');
    expect(svg).toContain("tanh_1_8 ×3");
  });

  test("errors: bad run, unknown selector, unwritable or unknown output, conflicting flags", async () => {
    const cases: [string[], RegExp][] = [
      [["graph", path.join(tmp.dir, "nope")], /run directory not found/],
      [["graph", run("cnn"), "--layers", "conv2dd"], /"conv2dd" matches no pass.*close: conv2d/],
      [["graph", run("cnn"), "-o", path.join(tmp.dir, "no/such/dir/g.svg")], /does not exist/],
      [["graph", run("cnn"), "-o", path.join(tmp.dir, "g.png")], /\.svg or \.dot/],
      [["graph", run("cnn"), "--rolled", "--unrolled"], /cannot be used with/],
      [["graph", run("cnn"), "--depth", "-1"], /--depth/],
      [["graph", run("cnn"), "--direction", "up"], /not one of TB, LR, BT/],
    ];
    for (const [args, message] of cases) {
      const r = await torchlens(args);
      expect({ args, code: r.exitCode }).toEqual({ args, code: 2 });
      expect(r.stderr).toMatch(message);
    }
  });
});
