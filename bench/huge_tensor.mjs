// A single activation past 4 GiB through the real CLI (ZIP64 in a real run), read back by Python's
// zipfile (CRC of every entry) and numpy (the small arrays around it), then removed.
// Usage: npm run build && node bench/huge_tensor.mjs [GiB]   (needs ~2x that much free disk)
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statfsSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const gib = Number(process.argv[2] ?? 4.5);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const dir = mkdtempSync(path.join(os.tmpdir(), "torchlens-huge-"));
const free = statfsSync(dir).bavail * statfsSync(dir).bsize;
if (free < gib * 2 ** 30 * 1.2) {
  console.log(`huge_tensor: skipped, ${(free / 2 ** 30).toFixed(1)} GiB free in ${dir}`);
  process.exit(0);
}
const run = path.join(dir, "run");
try {
  const t0 = performance.now();
  const res = spawnSync(
    "node",
    [
      path.join(root, "bin/torchlens.js"),
      "extract",
      path.join(root, "bench/models/huge_tensor.py"),
      "-o",
      run,
      "--json",
    ],
    {
      env: { ...process.env, TORCHLENS_HUGE_GIB: String(gib) },
      encoding: "utf8",
    },
  );
  const secs = (performance.now() - t0) / 1000;
  if (res.status !== 0) throw new Error(`extract failed: ${res.stderr}`);
  const summary = JSON.parse(res.stdout);
  const check = spawnSync(
    process.env.TORCHLENS_PYTHON || "/usr/bin/python3",
    [
      "-c",
      `
import json, zipfile, numpy as np, sys
run = sys.argv[1]
z = zipfile.ZipFile(run + "/activations.npz")
bad = z.testzip()
assert bad is None, f"bad CRC in {bad}"
big = max(z.infolist(), key=lambda i: i.file_size)
log = json.load(open(run + "/log.json"))
out = np.load(run + "/activations.npz")[log["outputs"][0]]
assert out.tolist() == [3.0, 3.0, 3.0], out
print(json.dumps({"largest_entry": big.filename, "largest_bytes": big.file_size, "entries": len(z.infolist())}))
`,
      run,
    ],
    { encoding: "utf8" },
  );
  if (check.status !== 0) throw new Error(`read-back failed: ${check.stderr}`);
  const facts = JSON.parse(check.stdout);
  console.log(
    `huge_tensor: one ${(facts.largest_bytes / 2 ** 30).toFixed(2)} GiB activation (${facts.largest_entry}) of ${summary.passes} passes ` +
      `extracted in ${secs.toFixed(1)} s (${(summary.bytes / 1e9 / secs).toFixed(2)} GB/s end to end); zipfile CRC check and numpy read-back OK`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
