/**
 * The capture-speed benchmark (`npm run bench -- --only speed`; also part of a full run): how many
 * times the plain forward pass torchlens's captured forward takes, every pass saved and on disk
 * (`saved_ms` of `extract --json`: the forward pass plus the agent's wait for its last bytes), on
 * each torch found (Debian's 1.13, the project's torch-2 venv) at torch's default thread count and
 * at one thread, for plain-torch models that run on every torch: ResNet-18 at batch 1 and 8, a
 * GPT-style decoder, and an LSTM cell stepped op by op. The plain forward is a fresh process's cold
 * forward under no_grad (bench/speed_plain.py), as extract's is. Alternating runs; medians with
 * min–max. Writes its section of bench/RESULTS.md (between the speed markers).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { machine as describeMachine } from "./lib/machine.mjs";
import { CLI, ROOT } from "./lib/measure.mjs";
import { runMonitored } from "./lib/procmon.mjs";
import { alignTables } from "./lib/report.mjs";
import { sectionOf, withSection } from "./lib/sections.mjs";
import { cell, fmt, MB, summarize } from "./lib/stats.mjs";

export const MARKS = {
  begin: "<!-- speed benchmark: bench/speed.mjs writes from here -->",
  end: "<!-- speed benchmark: end -->",
};

const MODELS = [
  {
    name: "resnet18 b1",
    file: "bench/models/resnet18_plain.py",
    env: { TORCHLENS_BENCH_BATCH: "1" },
    target: 1.3,
  },
  {
    name: "resnet18 b8",
    file: "bench/models/resnet18_plain.py",
    env: { TORCHLENS_BENCH_BATCH: "8" },
    target: 1.3,
  },
  { name: "gpt decoder", file: "bench/models/gpt_decoder.py", env: {}, target: 1.5 },
  { name: "lstm small ops", file: "bench/models/lstm_small_ops.py", env: {}, target: null },
];

function log(msg) {
  process.stderr.write(`[bench speed] ${msg}\n`);
}

/** The torches to measure: Debian's 1.13 and the setup script's torch-2 venv, where present. */
export function pythons() {
  const found = [];
  const debian = process.env.TORCHLENS_PYTHON || "/usr/bin/python3";
  if (fs.existsSync(debian)) found.push(debian);
  const venv = path.join(ROOT, ".venv-torch2/bin/python");
  if (fs.existsSync(venv)) found.push(venv);
  return found;
}

/** Run a command of the bench, monitored; its last stdout line as JSON, with wall time and peak memory. */
export async function run(cmd, args, env, what) {
  const r = await runMonitored(cmd, args, { cwd: ROOT, env: { ...process.env, ...env } });
  if (r.code !== 0)
    throw new Error(`${what} exited ${r.code ?? r.signal}: ${r.stderr.slice(-2000)}`);
  const line = r.stdout.trim().split("\n").filter(Boolean).pop() ?? "{}";
  return { ...JSON.parse(line), wallMs: r.wallMs, peak: r.peakSum };
}

/** Options: runs (3). Returns the measurements and the markdown section. */
export async function benchSpeed({ runs = 3 } = {}) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "torchlens-bench-speed-"));
  const rows = [];
  try {
    const machine = describeMachine(tmp);
    for (const python of pythons()) {
      for (const threads of [null, 1]) {
        for (const m of MODELS) {
          const env = {
            ...m.env,
            TORCHLENS_PYTHON: python,
            ...(threads ? { OMP_NUM_THREADS: String(threads) } : {}),
          };
          const plain = [];
          const captured = [];
          for (let i = 0; i < runs; i++) {
            const order = i % 2 ? ["tl", "plain"] : ["plain", "tl"];
            for (const who of order) {
              if (who === "plain")
                plain.push(
                  await run(
                    python,
                    [path.join(ROOT, "bench/speed_plain.py"), m.file],
                    env,
                    "plain forward",
                  ),
                );
              else {
                const out = path.join(tmp, "run");
                captured.push(
                  await run(
                    process.execPath,
                    [CLI, "extract", m.file, "-o", out, "--force", "--json"],
                    env,
                    "torchlens extract",
                  ),
                );
                fs.rmSync(out, { recursive: true, force: true });
              }
            }
          }
          const row = {
            python,
            threads: plain[0].threads,
            torch: plain[0].torch,
            model: m,
            plain,
            captured,
          };
          row.S = {
            plain: summarize(plain.map((p) => p.cold_ms)),
            warm: summarize(plain.map((p) => p.warm_ms)),
            saved: summarize(captured.map((c) => c.saved_ms)),
            forward: summarize(captured.map((c) => c.forward_ms)),
            multiple: summarize(captured.map((c, i) => c.saved_ms / plain[i].cold_ms)),
            wall: summarize(captured.map((c) => c.wall_ms)),
            budget: summarize(plain.map((p) => p.import_ms + 1.3 * p.cold_ms + 300)),
            peak: summarize(captured.map((c) => c.peak)),
            plainPeak: summarize(plain.map((p) => p.peak)),
          };
          row.passes = captured[0].passes;
          row.bytes = captured[0].bytes;
          rows.push(row);
          log(
            `torch ${row.torch} (${row.threads} thread(s)) ${m.name}: plain ${fmt(row.S.plain.median)} ms, captured ${fmt(row.S.saved.median)} ms (${fmt(row.S.multiple.median)}×)`,
          );
        }
      }
    }
    return { machine, runs, rows, date: new Date().toISOString() };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export function speedMarkdown({ machine, runs, rows, date }) {
  const lines = [
    MARKS.begin,
    "## Capture speed: the captured forward against the plain forward",
    "",
    `Measured ${date} on ${machine.cpu}, ${machine.cores} cores, ${fmt(machine.memTotal / 2 ** 30)} GiB (${machine.kernel}, Node ${machine.node}). Reproduce: \`npm run bench -- --only speed\` (\`node bench/run.mjs --only speed [--runs N]\`).`,
    "",
    `Captured = \`saved_ms\` of \`torchlens extract MODEL -o OUT --json\` (the agent's forward pass, every pass saved, plus its wait after it until the last byte is in activations.npz). Plain = the cold forward pass of a fresh process under no_grad, as extract runs it (\`bench/speed_plain.py\`; warm = median of 5 more). Whole-process budget = that process's \`import torch\` + 1.3 × plain + 0.3 s. Peak = summed RSS of the process tree (CLI + agent), 20 ms samples. ${runs} runs each, alternating; median (min–max). Threads: torch's default, then \`OMP_NUM_THREADS=1\`. The batch-8 rows write 268 MB into fresh page-cache pages: on a VM whose host takes back free memory those writes run at a tenth of their usual speed now and then (\`python3 bench/page_cache_write.py\`), which is most of their spread. On this VM two runs of this bench an hour apart differ by up to 1.5× in their medians (the same code: ResNet-18 b1 on torch 1.13 1.23× in one, 1.81× in the next); a change is judged by \`python3 bench/ab_extract.py\`, which interleaves the variants in one sitting and also reports the agent's CPU time.`,
    "",
    "| torch, threads | model | passes, MB saved | plain cold / warm, ms | captured, ms | multiple (target) | extract wall / budget, s | peak CLI + agent / plain, MB |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const S = r.S;
    const target = r.model.target
      ? `≤ ${r.model.target}: ${S.multiple.median <= r.model.target ? "**met**" : "not met"}`
      : "reported";
    lines.push(
      `| ${r.torch}, ${r.threads} | ${r.model.name} | ${r.passes}, ${fmt(r.bytes / MB)} | ${fmt(S.plain.median)} / ${fmt(S.warm.median)} | ${cell(S.saved)} | ${cell(S.multiple, 1, 3)} (${target}) | ${fmt(S.wall.median / 1000)} / ${fmt(S.budget.median / 1000)} | ${fmt(S.peak.median / MB)} / ${fmt(S.plainPeak.median / MB)} |`,
    );
  }
  lines.push("", MARKS.end, "");
  return alignTables(lines.join("\n"));
}

export const withSpeedSection = (text, section) => withSection(text, MARKS, section);
export const speedSectionOf = (text) => sectionOf(text, MARKS);
