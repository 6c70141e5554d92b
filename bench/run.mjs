#!/usr/bin/env node
/**
 * `npm run bench`: torchlens extract against a plain forward pass, forward hooks saving with numpy,
 * and numpy writing the same bytes, for each benchmark model; writes bench/RESULTS.md and prints a
 * compact table. See `node bench/run.mjs --help`.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { benchDataset, datasetMarkdown, datasetSectionOf, withDatasetSection } from "./dataset.mjs";
import { benchGrads, gradsMarkdown, gradsSectionOf, withGradsSection } from "./grads.mjs";
import { machine as describeMachine, freeDisk, meminfo } from "./lib/machine.mjs";
import {
  agentAlone,
  extract,
  hooks,
  nodeBoot,
  npwrite,
  plain,
  python,
  ROOT,
} from "./lib/measure.mjs";
import { writeHarness } from "./lib/python.mjs";
import { markdown, stdoutTable, summarizeModel } from "./lib/report.mjs";
import { fmt, MB, summarize } from "./lib/stats.mjs";
import { benchSpeed, speedMarkdown, speedSectionOf, withSpeedSection } from "./speed.mjs";

const HELP = `usage: npm run bench -- [--only NAME[,NAME]] [--runs N] [--big]

speed (in --only, or in a full run): the captured forward against the plain forward on each torch
  found, default threads and one (bench/speed.mjs).
grads (in --only, or in a full run): extract --grads against a plain forward + backward on each
  torch found (bench/grads.mjs).
dataset (in --only, or in a full run): torchlens dataset against a hand-written hook loop
  (bench/dataset.mjs), resnet18 over 512 generated images, then peak memory at 8192.

Models: ${"bigconv-1g, bigconv-8g (only with --big or when named in --only), tiny_transformer, resnet18, rnn_loop"}
  --only NAMES   run only these models (comma-separated)
  --runs N       runs per figure (default 3; each figure is the median, with min and max)
  --big          also run bigconv at ~8 GB of activations (checks free memory and disk first)
Writes bench/RESULTS.md; temp files go under $TMPDIR (default /tmp) and are removed.`;

const MODELS = [
  {
    name: "bigconv-1g",
    file: "bench/models/bigconv.py",
    env: { TORCHLENS_BENCH_MB: "1000" },
    bigActivations: true,
    streamTarget: true,
    description:
      "`bench/models/bigconv.py` with `TORCHLENS_BENCH_MB=1000`: a stem conv and 12 conv+relu blocks, 16 channels, one image; about 1 GB of activations in 26 large arrays.",
  },
  {
    name: "bigconv-8g",
    file: "bench/models/bigconv.py",
    env: { TORCHLENS_BENCH_MB: "8000" },
    bigActivations: true,
    streamTarget: true,
    big: true,
    mb: 8000,
    description:
      "`bench/models/bigconv.py` with `TORCHLENS_BENCH_MB=8000`: the same net on a larger image, about 8 GB of activations.",
  },
  {
    name: "tiny_transformer",
    file: "bench/models/tiny_transformer.py",
    env: {},
    smallOps: true,
    description:
      "`bench/models/tiny_transformer.py`: nn.TransformerEncoder, d_model 32, 4 heads, 4 layers, sequence 16, batch 1 — many tiny ops.",
  },
  {
    name: "resnet18",
    file: "bench/models/resnet18.py",
    env: {},
    bigActivations: true,
    description:
      "`bench/models/resnet18.py`: torchvision resnet18 (weights=None, eval) at batch 8, 224×224.",
  },
  {
    name: "rnn_loop",
    file: "bench/models/rnn_loop.py",
    env: {},
    smallOps: true,
    description:
      "`bench/models/rnn_loop.py`: an Elman cell (Linear + Linear + add + tanh) stepped 200 times, batch 4, hidden 64 — a loop of tiny ops.",
  },
];

function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: "string" },
      runs: { type: "string" },
      big: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const runs = values.runs === undefined ? 3 : Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1)
    throw new Error(`--runs must be a positive integer, not ${values.runs}`);
  const only = values.only
    ? values.only
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean)
    : null;
  for (const n of only ?? []) {
    if (!["dataset", "speed", "grads"].includes(n) && !MODELS.some((m) => m.name === n))
      throw new Error(`unknown model ${n}; models: ${MODELS.map((m) => m.name).join(", ")}`);
  }
  return { runs, runsGiven: values.runs !== undefined, only, big: values.big, argv };
}

/** Before each run, wait (up to this much in all) while other processes keep the CPUs busy. */
const QUIET_BUDGET_MS = 120_000;
const QUIET_CORES = 0.3;

/** Cores busy on the whole machine over the next `ms` (nothing of ours runs meanwhile). */
async function busyCores(ms) {
  const read = () => {
    const f = fs
      .readFileSync("/proc/stat", "latin1")
      .split("\n", 1)[0]
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    return f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] || 0);
  };
  const a = read();
  const t = performance.now();
  await new Promise((res) => setTimeout(res, ms));
  return ((read() - a) * 10) / (performance.now() - t); // USER_HZ = 100: a tick is 10 ms
}

async function waitQuiet(budgetMs) {
  const t0 = performance.now();
  let cores = await busyCores(500);
  while (cores > QUIET_CORES && performance.now() - t0 < budgetMs) cores = await busyCores(1000);
  return { cores, waitedMs: Math.max(0, performance.now() - t0 - 500) };
}

function log(msg) {
  process.stderr.write(`[bench] ${msg}\n`);
}

/** Is dist/ there, and not older than src/? */
function checkBuild() {
  const main = path.join(ROOT, "dist/cli/main.js");
  if (!fs.existsSync(main)) throw new Error("dist/ is missing: run `npm run build` first");
  const newest = (dir) => {
    let t = 0;
    for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (e.isFile())
        t = Math.max(t, fs.statSync(path.join(e.parentPath ?? e.path, e.name)).mtimeMs);
    }
    return t;
  };
  const src = path.join(ROOT, "src");
  if (fs.existsSync(src) && newest(src) > newest(path.join(ROOT, "dist")) + 1000) {
    return "dist/ is older than src/ (someone edited src/ after the last `npm run build`): the figures are for the built dist/";
  }
  return null;
}

/** Replace one benchmark's own section of RESULTS.md (or add it). */
function writeSection(withSection, section) {
  const file = path.join(ROOT, "bench/RESULTS.md");
  const text = fs.existsSync(file)
    ? fs.readFileSync(file, "utf8")
    : "# torchlens benchmark results\n";
  fs.writeFileSync(file, withSection(text, section));
}

/** `torchlens dataset` against the hand loop (bench/dataset.mjs): its own section of RESULTS.md. */
async function runDatasetBench(opts) {
  const result = await benchDataset({ runs: opts.runs });
  writeSection(withDatasetSection, datasetMarkdown(result));
  const S = result.S;
  console.log(
    `dataset: torchlens ${fmt(S.tlRate.median)} stimuli/s, hand loop ${fmt(S.handRate.median)} (ratio ${fmt(S.ratio.median)}); ` +
      `peak ${fmt(S.tlPeak.median / MB)} MB at ${result.images}` +
      (result.bigRun ? `, ${fmt(result.bigRun.peak / MB)} MB at ${result.big}` : "") +
      " (bench/RESULTS.md)",
  );
}

/** Captured against plain forward on each torch (bench/speed.mjs): its own section of RESULTS.md. */
async function runSpeedBench(opts) {
  const result = await benchSpeed({ runs: opts.runs });
  writeSection(withSpeedSection, speedMarkdown(result));
  for (const r of result.rows)
    console.log(
      `speed: torch ${r.torch}, ${r.threads} thread(s), ${r.model.name}: ${fmt(r.S.multiple.median, 3)}× the plain forward (bench/RESULTS.md)`,
    );
}

/** extract --grads against a plain forward + backward (bench/grads.mjs): its own section of RESULTS.md. */
async function runGradsBench(opts) {
  const result = await benchGrads({ runs: opts.runs });
  writeSection(withGradsSection, gradsMarkdown(result));
  for (const r of result.rows)
    console.log(
      `grads: torch ${r.torch}, ${r.model.name}: ${fmt(r.S.multiple.median, 3)}× a plain forward + backward (bench/RESULTS.md)`,
    );
}

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const sections = ["dataset", "speed", "grads"];
  if (opts.only?.every((n) => sections.includes(n))) {
    if (opts.only.includes("speed")) await runSpeedBench(opts);
    if (opts.only.includes("grads")) await runGradsBench(opts);
    if (opts.only.includes("dataset")) await runDatasetBench(opts);
    return;
  }
  const started = performance.now();
  const notes = [];
  const staleNote = checkBuild();
  if (staleNote) {
    log(`warning: ${staleNote}`);
    notes.push(staleNote);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "torchlens-bench-"));
  const cleanup = () => fs.rmSync(tmp, { recursive: true, force: true });
  process.on("exit", cleanup);
  for (const sig of ["SIGINT", "SIGTERM"]) {
    process.on(sig, () => {
      cleanup();
      process.exit(sig === "SIGINT" ? 130 : 143);
    });
  }
  const machine = describeMachine(tmp);
  const harness = writeHarness(tmp);
  const versions = await python(harness, ["versions"], { what: "python versions" });

  const models = MODELS.filter((m) =>
    opts.only ? opts.only.includes(m.name) : !m.big || opts.big,
  );
  const withDataset = !opts.only || opts.only.includes("dataset");
  const data = {};
  for (const m of MODELS)
    if (!models.includes(m))
      data[m.name] = { skipped: m.big ? "pass --big to run it" : "not in --only", runs: [] };

  // Room for the big one: the agent and the plain forward with autograd on hold every activation.
  for (const m of models.filter((x) => x.big)) {
    const need = m.mb * MB;
    const mem = meminfo().available;
    const disk = freeDisk(tmp);
    const why = [];
    if (mem < 1.5 * need + 2e9)
      why.push(
        `${fmt(mem / 1e9)} GB of memory available, ${fmt((1.5 * need + 2e9) / 1e9)} GB wanted`,
      );
    if (disk < 1.3 * need + 2e9)
      why.push(`${fmt(disk / 1e9)} GB free in ${tmp}, ${fmt((1.3 * need + 2e9) / 1e9)} GB wanted`);
    if (why.length) {
      const note = `${m.name} skipped: ${why.join("; ")}`;
      log(note);
      notes.push(note);
      data[m.name] = { skipped: why.join("; "), runs: [] };
    }
  }
  const todo = models.filter((m) => !data[m.name]);

  // Warm-up (not counted): page cache for torch's libraries and the CLI's modules.
  log("warm-up: import torch, torchlens --version, one small extract");
  await python(harness, ["import"]);
  await nodeBoot();
  await extract(
    MODELS.find((m) => m.name === "tiny_transformer"),
    path.join(tmp, "warmup-run"),
  );

  const global = { boot: [], importWall: [], importInner: [] };
  let quietBudgetMs = QUIET_BUDGET_MS;
  for (const m of todo) {
    // The 8 GB case takes minutes per run; one run unless --runs was given.
    const runs = m.big && !opts.runsGiven ? 1 : opts.runs;
    if (runs !== opts.runs)
      notes.push(`${m.name}: ${runs} run(s) (it takes minutes per run; pass --runs to set it)`);
    const entry = { runs: [], sizes: null };
    data[m.name] = entry;
    for (let i = 0; i < runs; i++) {
      const r = { errors: [] };
      const q = await waitQuiet(quietBudgetMs);
      quietBudgetMs -= q.waitedMs;
      r.othersBeforeCores = q.cores;
      if (q.waitedMs > 100)
        log(
          `waited ${fmt(q.waitedMs / 1000)} s for other work to calm down (others: ${fmt(q.cores, 2)} cores)`,
        );
      const step = async (key, what, fn) => {
        log(`${m.name} run ${i + 1}/${runs}: ${what}`);
        // the step before may have left gigabytes of dirty pages (hooks + np.save, the numpy
        // write): their writeback would compete with this step for the disk
        spawnSync("sync");
        try {
          r[key] = await fn();
        } catch (err) {
          log(String(err.message ?? err));
          r.errors.push(`${what}: ${err.message ?? err}`);
        }
      };
      // start-up references, beside each run so that they share its conditions
      await step("boot", "torchlens --version", () => nodeBoot());
      await step("importTorch", "python -c 'import torch'", () => python(harness, ["import"]));
      if (r.boot) global.boot.push(r.boot.wallMs);
      if (r.importTorch) {
        global.importWall.push(r.importTorch.wallMs);
        global.importInner.push(r.importTorch.import_ms);
      }
      await step("extract", "torchlens extract", () =>
        extract(m, path.join(tmp, `run-${m.name}`), { wantSizes: !entry.sizes }),
      );
      if (r.extract?.sizes) {
        entry.sizes = r.extract.sizes;
        delete r.extract.sizes;
      }
      await step("plainGrad", "plain forward (autograd on)", () => plain(harness, m, true));
      await step("plainNograd", "plain forward (no_grad)", () => plain(harness, m, false));
      await step("hooks", "hooks + np.save", () =>
        hooks(harness, m, path.join(tmp, `hooks-${m.name}`)),
      );
      if (m.smallOps)
        await step("agentAlone", "agent alone, no CLI (bench/agent_overhead.py)", () =>
          agentAlone(m),
        );
      if (entry.sizes) {
        const sizesFile = path.join(tmp, `sizes-${m.name}.json`);
        fs.writeFileSync(sizesFile, JSON.stringify(entry.sizes));
        await step("npwrite", "numpy write of the same bytes", () =>
          npwrite(harness, sizesFile, path.join(tmp, "npwrite.bin")),
        );
      }
      entry.runs.push(r);
      if (r.extract) {
        const s = r.extract.summary;
        log(
          `  extract ${fmt(r.extract.wallMs / 1000)} s (forward ${fmt(s.forward_ms / 1000)} s), ${s.passes} passes, ${fmt(s.bytes / MB)} MB, ` +
            `peak ${fmt(r.extract.peakSum / MB)} MB; plain ${fmt((r.plainGrad?.wallMs ?? Number.NaN) / 1000)} s, peak ${fmt((r.plainGrad?.peak_rss ?? Number.NaN) / MB)} MB`,
        );
      }
    }
  }

  const G = {
    boot: summarize(global.boot),
    importWall: summarize(global.importWall),
    importInner: summarize(global.importInner),
  };
  const summaries = {};
  for (const m of todo)
    if (data[m.name].runs.some((r) => r.extract)) summaries[m.name] = summarizeModel(data[m.name]);
  const shown = MODELS.filter((m) => models.includes(m) || m.big === undefined);
  const elapsedMs = performance.now() - started;
  machine.loadEnd = os.loadavg();
  const md = markdown({
    machine,
    versions,
    opts,
    models: shown,
    data,
    summaries,
    global: G,
    notes,
    elapsedMs,
  });
  const resultsFile = path.join(ROOT, "bench/RESULTS.md");
  const before = fs.existsSync(resultsFile) ? fs.readFileSync(resultsFile, "utf8") : "";
  let written = md;
  const keptDataset = datasetSectionOf(before);
  if (keptDataset) written = withDatasetSection(written, keptDataset);
  const keptSpeed = speedSectionOf(before);
  if (keptSpeed) written = withSpeedSection(written, keptSpeed);
  const keptGrads = gradsSectionOf(before);
  if (keptGrads) written = withGradsSection(written, keptGrads);
  fs.writeFileSync(resultsFile, written);
  console.log(stdoutTable(shown, summaries));
  console.log(
    `\nmedians of ${opts.runs} run(s); peak = CLI + agent RSS summed per 20 ms sample; plain ng = under no_grad, as extract runs the model; plain peak g/ng = autograd on / no_grad; ` +
      `µs/op = (extract forward − plain forward) / passes; 1st op = from CLI start.\n` +
      `node start-up ${fmt(G.boot.median / 1000)} s; python -c 'import torch' ${fmt(G.importWall.median / 1000)} s. ` +
      `Full tables and the targets: bench/RESULTS.md (${fmt(elapsedMs / 60000)} min).`,
  );
  const busy = Object.values(summaries).map((S) => S.busy.median ?? 0);
  if (Math.max(0, ...busy) > 0.5) {
    console.log(
      `warning: other processes used up to ${fmt(Math.max(...busy), 2)} of ${machine.cores} cores during the measurements ("others' cores"); the times are inflated — rerun on a quiet machine (kernel writeback of the bench's own files counts too)`,
    );
  }
  for (const n of notes) console.log(`note: ${n}`);
  if (!opts.only || opts.only.includes("speed")) await runSpeedBench(opts);
  if (!opts.only || opts.only.includes("grads")) await runGradsBench(opts);
  if (withDataset) await runDatasetBench(opts);
  const failed = Object.values(data).flatMap((d) => d.runs.flatMap((r) => r.errors ?? []));
  if (failed.length) {
    console.log(`\n${failed.length} measurement(s) failed:`);
    for (const f of failed) console.log(`- ${f.split("\n")[0]}`);
    process.exitCode = 1;
  }
}

main().catch((err) => {
  process.stderr.write(`bench: ${err.message ?? err}\n`);
  process.exitCode = 1;
});
