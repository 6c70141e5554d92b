/**
 * The dataset benchmark (`npm run bench -- --only dataset`; also part of a full `npm run bench`):
 * `torchlens dataset` against the loop people write by hand (bench/dataset_handloop.py: a
 * DataLoader, torchvision's transforms, forward hooks on the same modules, numpy writing the same
 * arrays), side by side and alternating, on torchvision's resnet18 over generated 224×224 JPEG
 * images at batch 32, five layers saved. Then torchlens's peak memory at a larger stimulus count,
 * which must stay flat. Writes its section of bench/RESULTS.md (between the dataset markers; the
 * rest of the file is run.mjs's).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { machine as describeMachine } from "./lib/machine.mjs";
import { CLI, ROOT } from "./lib/measure.mjs";
import { runMonitored } from "./lib/procmon.mjs";
import { alignTables } from "./lib/report.mjs";
import { sectionOf, withSection } from "./lib/sections.mjs";
import { fmt, MB, summarize } from "./lib/stats.mjs";

const PYTHON = process.env.TORCHLENS_PYTHON || "/usr/bin/python3";
const MODEL = path.join(ROOT, "bench/models/resnet18_dataset.py");
const HAND = path.join(ROOT, "bench/dataset_handloop.py");
const MODULES = ["layer1", "layer2", "layer3", "layer4", "fc"];
const BATCH = 32;
export const MARK_BEGIN = "<!-- dataset benchmark: bench/dataset.mjs writes from here -->";
export const MARK_END = "<!-- dataset benchmark: end -->";

function log(msg) {
  process.stderr.write(`[bench dataset] ${msg}\n`);
}

async function run(cmd, args, what) {
  const r = await runMonitored(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, TORCHLENS_PYTHON: PYTHON },
  });
  if (r.code !== 0)
    throw new Error(`${what} exited ${r.code ?? r.signal}: ${r.stderr.slice(-2000)}`);
  return r;
}

function lastJson(text) {
  const line = text.trim().split("\n").filter(Boolean).pop() ?? "{}";
  return JSON.parse(line);
}

async function torchlens(images, out, workers) {
  const r = await run(
    process.execPath,
    [
      CLI,
      "dataset",
      MODEL,
      images,
      "-o",
      out,
      "--layers",
      MODULES.map((m) => `${m}@out`).join(","),
      "--preset",
      "imagenet",
      "--batch-size",
      String(BATCH),
      "--workers",
      String(workers),
      "--json",
    ],
    "torchlens dataset",
  );
  return {
    wallMs: r.wallMs,
    peak: r.peakSum,
    othersCores: r.othersCores,
    summary: lastJson(r.stdout),
  };
}

async function handloop(images, out, workers) {
  const r = await run(
    PYTHON,
    [HAND, MODEL, images, out, String(BATCH), String(workers), MODULES.join(",")],
    "hand loop",
  );
  return { wallMs: r.wallMs, peak: r.peakSum, othersCores: r.othersCores };
}

/** Options: images (512), big (8192; 0 to skip), runs (3). */
export async function benchDataset({ images = 512, big = 8192, runs = 3 } = {}) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "torchlens-bench-dataset-"));
  const workers = Math.max(1, Math.min(8, os.cpus().length - 1));
  try {
    const machine = describeMachine(tmp);
    const small = path.join(tmp, `images-${images}`);
    log(`generating ${images} images`);
    await run(PYTHON, [HAND, "images", small, String(images)], "image generation");
    const rows = { tl: [], hand: [] };
    let maxRel = null;
    for (let i = 0; i < runs; i++) {
      for (const who of i % 2 ? ["hand", "tl"] : ["tl", "hand"]) {
        const out = path.join(tmp, `${who}-out`);
        log(`run ${i + 1}/${runs}: ${who === "tl" ? "torchlens dataset" : "hand loop"}`);
        const r =
          who === "tl" ? await torchlens(small, out, workers) : await handloop(small, out, workers);
        rows[who].push(r);
        log(
          `  ${fmt(r.wallMs / 1000)} s, ${fmt(images / (r.wallMs / 1000))} stimuli/s, peak ${fmt(r.peak / MB)} MB`,
        );
      }
      if (i === 0) {
        const cmp = await run(
          PYTHON,
          [
            HAND,
            "compare",
            path.join(tmp, "tl-out"),
            path.join(tmp, "hand-out"),
            MODULES.join(","),
          ],
          "compare",
        );
        maxRel = lastJson(cmp.stdout).max_rel;
        log(
          `  torchlens's rows against the hand loop's arrays: largest difference ${maxRel} of scale`,
        );
        if (!(maxRel <= 1e-4))
          throw new Error(`torchlens dataset and the hand loop disagree (max rel ${maxRel})`);
      }
      for (const who of ["tl", "hand"])
        fs.rmSync(path.join(tmp, `${who}-out`), { recursive: true, force: true });
    }
    fs.rmSync(small, { recursive: true, force: true });
    let bigRun = null;
    if (big) {
      const many = path.join(tmp, `images-${big}`);
      log(`generating ${big} images; then one torchlens dataset run over them (minutes)`);
      await run(PYTHON, [HAND, "images", many, String(big)], "image generation");
      bigRun = await torchlens(many, path.join(tmp, "tl-big"), workers);
      log(`  ${fmt(bigRun.wallMs / 1000)} s, peak ${fmt(bigRun.peak / MB)} MB`);
    }
    const S = {
      tlRate: summarize(rows.tl.map((r) => images / (r.wallMs / 1000))),
      handRate: summarize(rows.hand.map((r) => images / (r.wallMs / 1000))),
      ratio: summarize(rows.tl.map((r, i) => rows.hand[i].wallMs / r.wallMs)),
      tlPeak: summarize(rows.tl.map((r) => r.peak)),
      handPeak: summarize(rows.hand.map((r) => r.peak)),
      others: summarize([...rows.tl, ...rows.hand].map((r) => r.othersCores)),
    };
    return {
      machine,
      images,
      big,
      runs,
      workers,
      maxRel,
      S,
      bigRun,
      bytes: rows.tl[0]?.summary?.bytes,
    };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

const c = (s, scale = 1) =>
  s?.median == null
    ? "–"
    : `${fmt(s.median * scale)} (${fmt(s.min * scale)}–${fmt(s.max * scale)})`;

export function datasetMarkdown(r) {
  const m = r.machine;
  const flat = r.bigRun ? r.bigRun.peak / r.S.tlPeak.median : null;
  return alignTables(
    [
      MARK_BEGIN,
      "## Datasets: `torchlens dataset` against the hand-written loop",
      "",
      `Measured ${m.date} on ${m.cpu}, ${m.cores} cores, ${fmt(m.memTotal / 2 ** 30)} GiB (${m.kernel}, Node ${m.node}, ${PYTHON}). Reproduce: \`npm run bench -- --only dataset\` (\`node bench/run.mjs --only dataset [--runs N]\`).`,
      "",
      `torchvision resnet18 (weights=None, eval) over ${r.images} generated 224×224 JPEG images at batch ${BATCH}, saving ${MODULES.length} layers (${MODULES.map((x) => `\`${x}@out\``).join(", ")}: ${fmt(r.bytes / MB)} MB of rows), ${r.workers} decoding worker(s) for both, torch's default threads. Whole-process wall time from spawn to exit, so start-up (Python, torch, the model, and for torchlens Node and the probe forward) counts for both. ${r.runs} runs each, alternating; peak = the summed RSS of the process tree (20 ms samples). torchlens: \`torchlens dataset ${"MODEL IMAGES"} -o OUT --layers ... --preset imagenet --batch-size ${BATCH} --workers ${r.workers}\`. Hand loop: \`bench/dataset_handloop.py\` (DataLoader, torchvision's Resize(256)/CenterCrop(224)/ToTensor/Normalize, forward hooks, \`np.lib.format.open_memmap\` arrays). The two outputs agree to ${r.maxRel?.toExponential(1)} of scale.`,
      "",
      "| measure | torchlens dataset | hand loop |",
      "|---|---|---|",
      `| stimuli/s, median (min–max) | ${c(r.S.tlRate)} | ${c(r.S.handRate)} |`,
      `| throughput ratio torchlens / hand loop (target ≥ 0.8) | ${c(r.S.ratio)} | |`,
      `| peak memory at ${r.images} stimuli, MB | ${c(r.S.tlPeak, 1 / MB)} | ${c(r.S.handPeak, 1 / MB)} |`,
      r.bigRun
        ? `| peak memory at ${r.big} stimuli (one run), MB | ${fmt(r.bigRun.peak / MB)} (${fmt(flat)}× the ${r.images}-stimulus peak; ${fmt(r.big / (r.bigRun.wallMs / 1000))} stimuli/s) | |`
        : `| peak memory at a larger count | not run | |`,
      `| other processes' cores during the runs | ${c(r.S.others)} | |`,
      "",
      MARK_END,
      "",
    ].join("\n"),
  );
}

/** RESULTS.md with the dataset section replaced (or added at the end). */
export function withDatasetSection(text, section) {
  return withSection(text, { begin: MARK_BEGIN, end: MARK_END }, section);
}

/** The dataset section of an existing RESULTS.md, or "" (run.mjs keeps it when it rewrites the file). */
export function datasetSectionOf(text) {
  return sectionOf(text, { begin: MARK_BEGIN, end: MARK_END });
}
