/**
 * `dataset submit --slurm` on a real one-node Slurm cluster started for this file
 * (scripts/slurm-cluster.sh via test/helpers/slurm.ts): a 4-task array of a real model over
 * generated images gives files byte-identical to a single process; a task cancelled mid-way shows
 * as interrupted, and submitting again reruns that shard alone and completes the set.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { fixture, python, ROOT, tempDir, torchlens } from "../helpers/cli.js";
import { doneCount, json, layerHashes } from "../helpers/dataset.js";
import { type Cluster, startCluster } from "../helpers/slurm.js";

const HAS_PIL = (await python(["-c", "import PIL"])).exitCode === 0;
const started = HAS_PIL ? await startCluster() : { skip: "this Python has no Pillow" };
const cluster: Cluster | null = "skip" in started ? null : started;
if (!cluster) console.warn(`dataset-slurm: skipped: ${(started as { skip: string }).skip}`);
afterAll(async () => {
  await cluster?.stop();
}, 60_000);

const tmp = tempDir("torchlens-slurm-");
afterAll(() => tmp.cleanup());
const at = (...p: string[]) => path.join(tmp.dir, ...p);

async function until(
  what: string,
  ok: () => boolean | Promise<boolean>,
  ms: number,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

(cluster ? describe : describe.skip)("dataset submit --slurm on a one-node cluster", () => {
  const env = () => cluster?.env as Record<string, string>;
  let model = "";
  let args: string[] = [];
  beforeAll(async () => {
    const made = await python([
      path.join(ROOT, "test/helpers/make_stimuli.py"),
      "images",
      at("imgs"),
      "200",
    ]);
    expect(made.exitCode).toBe(0);
    // the bundled CNN, a little slower per forward, so a task can be cancelled while it runs
    model = at("slow_cnn.py");
    writeFileSync(
      model,
      `import sys, time\nsys.path.insert(0, ${JSON.stringify(path.dirname(fixture("cnn.py")))})\nfrom cnn import build_model as _base\n\ndef build_model():\n    m = _base()\n    m.register_forward_hook(lambda *a: time.sleep(0.3))\n    return m\n`,
    );
    args = [model, at("imgs"), "--layers", "relu,linear", "--batch-size", "10", "--workers", "1"];
  }, 60_000);

  test("four array tasks write the files a single process writes, byte for byte; a cancelled task reruns alone", async () => {
    const single = await torchlens(["dataset", ...args, "-o", at("single")]);
    expect(single.exitCode).toBe(0);

    const out = at("sharded");
    const first = await torchlens(
      ["dataset", "submit", "--slurm", ...args, "-o", out, "--shards", "4", "--json"],
      { env: env() },
    );
    expect(first.stderr).toBe("");
    expect(first.exitCode).toBe(0);
    const sub = JSON.parse(first.stdout);
    expect(sub.tasks).toEqual([1, 2, 3, 4]);
    expect(existsSync(sub.script)).toBe(true);

    // cancel shard 2 once it has written a batch but not all five
    const record = path.join(out, "progress/shard-0002-of-0004.json");
    await until(
      "shard 2's first batch",
      () => existsSync(record) && doneCount(record) >= 1,
      120_000,
    );
    await execa("scancel", [`${sub.job}_2`], { env: env() });
    await cluster?.waitForJob(sub.job, 180_000);

    const mid = JSON.parse(
      (await torchlens(["dataset", "status", out, "--json"], { env: env() })).stdout,
    );
    expect(mid.complete).toBe(false);
    const states = Object.fromEntries(
      mid.shards.map((s: { shard: string; state: string }) => [s.shard, s.state]),
    );
    expect(states).toEqual({ "1/4": "done", "2/4": "interrupted", "3/4": "done", "4/4": "done" });
    expect(doneCount(record)).toBeLessThan(5);
    expect(json(path.join(out, "manifest.json")).status).toBe("incomplete");

    const again = await torchlens(
      ["dataset", "submit", "--slurm", ...args, "-o", out, "--shards", "4", "--json"],
      { env: env() },
    );
    expect(again.exitCode).toBe(0);
    const resub = JSON.parse(again.stdout);
    expect(resub.tasks).toEqual([2]);
    await cluster?.waitForJob(resub.job, 180_000);

    const end = JSON.parse(
      (await torchlens(["dataset", "status", out, "--json"], { env: env() })).stdout,
    );
    expect(end.complete).toBe(true);
    expect(end.shards.map((s: { state: string }) => s.state)).toEqual([
      "done",
      "done",
      "done",
      "done",
    ]);
    expect(layerHashes(out)).toEqual(layerHashes(at("single")));
    expect(readFileSync(path.join(out, "stimuli.txt"), "utf8")).toBe(
      readFileSync(at("single", "stimuli.txt"), "utf8"),
    );
    // the tasks' logs are kept beside the job script
    expect(readdirSync(path.join(out, "slurm")).filter((n) => n.endsWith(".log")).length).toBe(5);
  }, 600_000);

  test("inside an array task without --shard, the task's shard comes from SLURM_ARRAY_TASK_ID", async () => {
    const out = at("sharded");
    const sub = JSON.parse(readFileSync(path.join(out, "slurm/submissions.json"), "utf8"))[0];
    // a hand-written array job (ids 0-1) that gives no --shard, into a new output: each task finds
    // its shard from the environment, and the two prepare the output at once (one rename wins)
    const script = at("by-env.sh");
    const cmd = readFileSync(sub.script, "utf8")
      .split("\n")
      .find((l) => l.startsWith("exec ")) as string;
    const other = at("envshard2");
    writeFileSync(
      script,
      `#!/bin/bash\n${cmd.replace(/ --shard "[^"]*"/, "").replace(out, other)}\n`,
    );
    const { stdout } = await execa(
      "sbatch",
      ["--parsable", "--array=0-1", `--output=${at("by-env-%a.log")}`, script],
      { env: env() },
    );
    await cluster?.waitForJob(stdout.trim(), 180_000);
    const st = JSON.parse(
      (await torchlens(["dataset", "status", other, "--json"], { env: env() })).stdout,
    );
    expect(st.shards.map((s: { shard: string; state: string }) => `${s.shard} ${s.state}`)).toEqual(
      ["1/2 done", "2/2 done"],
    );
    expect(layerHashes(other)).toEqual(layerHashes(at("single")));
  }, 600_000);
});
