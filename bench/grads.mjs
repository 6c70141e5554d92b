/**
 * The cost of `--grads` (`npm run bench -- --only grads`; also part of a full run): `torchlens
 * extract --grads` (the captured forward, every pass saved, then the backward pass saving every
 * pass's gradient) against a fresh process's plain forward + backward from the sum of the outputs
 * (bench/grads_plain.py), on each torch found at its default thread count, for the speed
 * benchmark's plain-torch models. Alternating runs; medians with min–max. Writes its section of
 * bench/RESULTS.md (between the gradient markers).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { machine as describeMachine } from "./lib/machine.mjs";
import { CLI, ROOT } from "./lib/measure.mjs";
import { alignTables } from "./lib/report.mjs";
import { sectionOf, withSection } from "./lib/sections.mjs";
import { cell, fmt, MB, summarize } from "./lib/stats.mjs";
import { pythons, run } from "./speed.mjs";

export const MARKS = {
  begin: "<!-- gradients benchmark: bench/grads.mjs writes from here -->",
  end: "<!-- gradients benchmark: end -->",
};

const MODELS = [
  {
    name: "resnet18 b1",
    file: "bench/models/resnet18_plain.py",
    env: { TORCHLENS_BENCH_BATCH: "1" },
  },
  { name: "gpt decoder", file: "bench/models/gpt_decoder.py", env: {} },
  { name: "lstm small ops", file: "bench/models/lstm_small_ops.py", env: {} },
];

function log(msg) {
  process.stderr.write(`[bench grads] ${msg}\n`);
}

/** Options: runs (3). Returns the measurements and the markdown section. */
export async function benchGrads({ runs = 3 } = {}) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "torchlens-bench-grads-"));
  const rows = [];
  try {
    const machine = describeMachine(tmp);
    for (const python of pythons()) {
      for (const m of MODELS) {
        const env = { ...m.env, TORCHLENS_PYTHON: python };
        const plain = [];
        const captured = [];
        for (let i = 0; i < runs; i++) {
          const order = i % 2 ? ["tl", "plain"] : ["plain", "tl"];
          for (const who of order) {
            if (who === "plain") {
              const script = path.join(ROOT, "bench/grads_plain.py");
              plain.push(await run(python, [script, m.file], env, "plain forward + backward"));
              continue;
            }
            const out = path.join(tmp, "run");
            const args = [CLI, "extract", m.file, "-o", out, "--force", "--json", "--grads"];
            const summary = await run(process.execPath, args, env, "torchlens extract --grads");
            const log = JSON.parse(fs.readFileSync(path.join(out, "log.json"), "utf8"));
            const gradBytes = fs.statSync(path.join(out, "gradients.npz")).size;
            captured.push({ ...summary, backward_ms: log.gradients.backward_ms, gradBytes });
            fs.rmSync(out, { recursive: true, force: true });
          }
        }
        // the captured forward until its last activation is written, then the backward saving every gradient
        const total = (c) => c.saved_ms + c.backward_ms;
        const row = { python, threads: plain[0].threads, torch: plain[0].torch, model: m };
        row.S = {
          plain: summarize(plain.map((p) => p.cold_ms)),
          plainBackward: summarize(plain.map((p) => p.backward_ms)),
          captured: summarize(captured.map(total)),
          backward: summarize(captured.map((c) => c.backward_ms)),
          multiple: summarize(captured.map((c, i) => total(c) / plain[i].cold_ms)),
          peak: summarize(captured.map((c) => c.peak)),
          plainPeak: summarize(plain.map((p) => p.peak)),
        };
        row.passes = captured[0].passes;
        row.gradBytes = captured[0].gradBytes;
        rows.push(row);
        log(
          `torch ${row.torch} ${m.name}: plain fwd+bwd ${fmt(row.S.plain.median)} ms, extract --grads ${fmt(row.S.captured.median)} ms (${fmt(row.S.multiple.median)}×)`,
        );
      }
    }
    return { machine, runs, rows, date: new Date().toISOString() };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export function gradsMarkdown({ machine, runs, rows, date }) {
  const lines = [
    MARKS.begin,
    "## The cost of --grads: extract --grads against a plain forward + backward",
    "",
    `Measured ${date} on ${machine.cpu}, ${machine.cores} cores, ${fmt(machine.memTotal / 2 ** 30)} GiB (${machine.kernel}, Node ${machine.node}). Reproduce: \`npm run bench -- --only grads\` (\`node bench/run.mjs --only grads [--runs N]\`).`,
    "",
    `torchlens = \`saved_ms\` of \`torchlens extract MODEL -o OUT --grads --json\` (the captured forward with autograd on, every pass saved) + log.json's \`gradients.backward_ms\` (the backward pass from the sum of the outputs, every pass's gradient sent and written). Plain = a fresh process's cold forward with autograd on + backward from the same sum, inputs requiring gradients as extract --grads makes them (\`bench/grads_plain.py\`). Peak = summed RSS of the process tree, 20 ms samples. Torch's default threads. ${runs} runs each, alternating; median (min–max).`,
    "",
    "| torch, threads | model | passes, gradient MB | plain fwd + bwd (bwd), ms | extract --grads (bwd), ms | multiple | peak CLI + agent / plain, MB |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const S = r.S;
    lines.push(
      `| ${r.torch}, ${r.threads} | ${r.model.name} | ${r.passes}, ${fmt(r.gradBytes / MB)} | ${cell(S.plain)} (${fmt(S.plainBackward.median)}) | ${cell(S.captured)} (${fmt(S.backward.median)}) | ${cell(S.multiple, 1, 3)} | ${fmt(S.peak.median / MB)} / ${fmt(S.plainPeak.median / MB)} |`,
    );
  }
  lines.push("", MARKS.end, "");
  return alignTables(lines.join("\n"));
}

export const withGradsSection = (text, section) => withSection(text, MARKS, section);
export const gradsSectionOf = (text) => sectionOf(text, MARKS);
