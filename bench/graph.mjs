#!/usr/bin/env node
/**
 * `node bench/graph.mjs`: how long `torchlens graph` takes on large graphs. For each model it makes
 * a run once (torchlens extract), then, rolled and unrolled, times the three stages separately —
 * building the view from log.json, writing DOT (ts-graphviz), and the layout to SVG in a fresh
 * worker (WebAssembly Graphviz load + dot) — and the whole command through the CLI. With
 * --uncapped it also lays out each graph once without the large-graph settings of
 * src/graph/dot.ts (layoutAttributes), to show what they save. Needs `npm run build` first.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { machine } from "./lib/machine.mjs";
import { CLI, ROOT } from "./lib/measure.mjs";
import { PYTHON } from "./lib/python.mjs";
import { fmt, summarize } from "./lib/stats.mjs";

const HELP = `usage: node bench/graph.mjs [--runs N] [--only NAME[,NAME]] [--uncapped]

Models: densenet201 (torchvision, 1115 passes), rnn_loop (an RNN cell stepped 200 times: 1004 passes, 9 layers)
  --runs N      timed runs per figure (default 3; figures are medians with min–max)
  --only NAMES  only these models
  --uncapped    also lay each graph out once without the large-graph settings (slow)`;

const MODELS = [
  { name: "densenet201", file: "bench/models/densenet201.py" },
  { name: "rnn_loop", file: "bench/models/rnn_loop.py" },
];

const { values: args } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    only: { type: "string" },
    uncapped: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  console.log(HELP);
  process.exit(0);
}
const runs = Number(args.runs);
const only = args.only?.split(",");

const dist = path.join(ROOT, "dist/graph/view.js");
if (!fs.existsSync(dist)) {
  console.error("bench/graph.mjs: dist/ is missing; run `npm run build` first");
  process.exit(2);
}
const { buildView } = await import(path.join(ROOT, "dist/graph/view.js"));
const { toDotText, layoutAttributes } = await import(path.join(ROOT, "dist/graph/dot.js"));
const { renderSvg } = await import(path.join(ROOT, "dist/graph/render.js"));

const tmp = fs.mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), "torchlens-bench-graph-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));

const env = { ...process.env, TORCHLENS_PYTHON: process.env.TORCHLENS_PYTHON || PYTHON };
const ms = (t0) => performance.now() - t0;
const cell = (xs, scale = 1) => {
  const s = summarize(xs);
  if (s.median === null) return "–";
  const m = fmt(s.median * scale);
  return s.n < 2 ? m : `${m} (${fmt(s.min * scale)}–${fmt(s.max * scale)})`;
};

/** The DOT without the settings layoutAttributes adds for its size. */
function uncapped(dot, nodes, edges) {
  let out = dot;
  for (const key of Object.keys(layoutAttributes(nodes, edges)))
    out = out.replace(new RegExp(`^  ${key} = [^;]*;\\n`, "m"), "");
  return out;
}

const m = machine(tmp);
console.log(
  `machine: ${m.cpu}, ${m.cores} cores, ${fmt(m.memTotal / 2 ** 30)} GiB, ${m.node}, load ${m.load.map((x) => x.toFixed(1)).join(" ")}`,
);
const rows = [];
for (const model of MODELS.filter((x) => !only || only.includes(x.name))) {
  const run = path.join(tmp, model.name);
  let t0 = performance.now();
  execFileSync(process.execPath, [CLI, "extract", model.file, "-o", run], {
    cwd: ROOT,
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  const extractMs = ms(t0);
  const log = JSON.parse(fs.readFileSync(path.join(run, "log.json"), "utf8"));
  console.log(
    `${model.name}: ${log.num_passes} passes, ${log.num_layers} layers (extract ${fmt(extractMs / 1000)} s)`,
  );
  for (const mode of ["rolled", "unrolled"]) {
    const f = { view: [], dot: [], load: [], layout: [], render: [], cli: [] };
    let view;
    let dot;
    let svgBytes = 0;
    for (let i = 0; i < runs; i++) {
      t0 = performance.now();
      view = buildView(log, { mode, depth: null });
      f.view.push(ms(t0));
      t0 = performance.now();
      dot = toDotText(view, { direction: "TB" });
      f.dot.push(ms(t0));
      t0 = performance.now();
      const r = await renderSvg(dot);
      f.render.push(ms(t0));
      f.load.push(r.loadMs);
      f.layout.push(r.layoutMs);
      svgBytes = r.svg.length;
      const out = path.join(tmp, `${model.name}-${mode}.svg`);
      t0 = performance.now();
      execFileSync(
        process.execPath,
        [CLI, "graph", run, "-o", out, ...(mode === "unrolled" ? ["--unrolled"] : [])],
        { cwd: ROOT, env, stdio: ["ignore", "ignore", "pipe"] },
      );
      f.cli.push(ms(t0));
    }
    let uncappedMs = null;
    if (
      args.uncapped &&
      Object.keys(layoutAttributes(view.nodes.length, view.edges.length)).length
    ) {
      uncappedMs = (await renderSvg(uncapped(dot, view.nodes.length, view.edges.length))).layoutMs;
    }
    rows.push({
      model: model.name,
      mode,
      nodes: view.nodes.length,
      edges: view.edges.length,
      clusters: view.clusters.length,
      settings: Object.entries(layoutAttributes(view.nodes.length, view.edges.length))
        .map(([k, v]) => `${k}=${v}`)
        .join(" "),
      view: cell(f.view),
      dot: cell(f.dot),
      load: cell(f.load),
      layout: cell(f.layout, 1 / 1000),
      uncapped: uncappedMs === null ? "–" : fmt(uncappedMs / 1000),
      cli: cell(f.cli, 1 / 1000),
      svg: `${fmt(svgBytes / 1e6)} MB`,
    });
  }
}

const columns = [
  ["model", "model"],
  ["mode", "mode"],
  ["nodes", "nodes"],
  ["edges", "edges"],
  ["clusters", "clusters"],
  ["view", "view ms"],
  ["dot", "DOT ms"],
  ["load", "wasm load ms"],
  ["layout", "layout s"],
  ["uncapped", "uncapped layout s"],
  ["cli", "whole command s"],
  ["svg", "SVG"],
];
const widths = columns.map(([k, h]) => Math.max(h.length, ...rows.map((r) => String(r[k]).length)));
const line = (cells) =>
  cells
    .map((c, i) => String(c).padEnd(widths[i]))
    .join("  ")
    .trimEnd();
console.log();
console.log(line(columns.map(([, h]) => h)));
for (const r of rows) console.log(line(columns.map(([k]) => r[k])));
console.log();
for (const r of rows)
  if (r.settings) console.log(`${r.model} ${r.mode}: large-graph settings ${r.settings}`);
console.log(
  `figures: median (min–max) of ${runs} runs; layout = WebAssembly Graphviz dot in a fresh worker; whole command = node bin/torchlens.js graph RUN, process start to exit`,
);
