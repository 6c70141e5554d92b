// Times `torchlens validate` on a torchvision resnet18 run (random weights, batch 8 at 224x224):
// the replay of every pass from disk with the dependence check, and without it (--no-dependence).
// Usage: npm run build && node bench/validate.mjs [--runs N]
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const runs = Number(process.argv[process.argv.indexOf("--runs") + 1] || 3) || 3;
const cli = (args) => {
  const t0 = performance.now();
  const res = spawnSync("node", [path.join(root, "bin/torchlens.js"), ...args], {
    encoding: "utf8",
    maxBuffer: 1 << 28,
  });
  if (res.status !== 0) throw new Error(`torchlens ${args.join(" ")} failed:\n${res.stderr}`);
  return { ms: performance.now() - t0, out: res.stdout };
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (xs) =>
  `median ${(median(xs) / 1000).toFixed(2)} s (min ${(Math.min(...xs) / 1000).toFixed(2)}, max ${(Math.max(...xs) / 1000).toFixed(2)})`;

const dir = mkdtempSync(path.join(os.tmpdir(), "torchlens-bench-validate-"));
try {
  const run = path.join(dir, "resnet18");
  const extract = cli([
    "extract",
    path.join(root, "bench/models/resnet18.py"),
    "-o",
    run,
    "--json",
  ]);
  const summary = JSON.parse(extract.out);
  const full = [];
  const light = [];
  let report = null;
  for (let i = 0; i < runs; i++) {
    const r = cli(["validate", run, "--json"]);
    full.push(r.ms);
    report = JSON.parse(r.out);
    light.push(cli(["validate", run, "--no-dependence"]).ms);
  }
  console.log(
    `resnet18, batch 8, 224x224: ${summary.passes} passes, ${(summary.bytes / 1e6).toFixed(0)} MB saved (extract ${(extract.ms / 1000).toFixed(2)} s)`,
  );
  console.log(
    `validate:                 ${fmt(full)} — ${report.counts.passed} passed, ${report.counts.failed} failed, ${report.counts.exempt} exempt`,
  );
  console.log(`validate --no-dependence: ${fmt(light)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
