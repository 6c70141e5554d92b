/** A one-node Slurm cluster for a test file (scripts/slurm-cluster.sh), and the client calls the tests make. */
import { mkdtempSync, rmSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { ROOT } from "./cli.js";

const SCRIPT = path.join(ROOT, "scripts/slurm-cluster.sh");

export interface Cluster {
  dir: string;
  /** process.env with the cluster's client settings (SLURM_CONF) and no inherited SLURM_* job variables. */
  env: Record<string, string>;
  stop(): Promise<void>;
  sbatch(args: string[]): Promise<string>;
  /** Wait until the job (every task of an array) has left the queue or ended. */
  waitForJob(job: string, timeoutMs: number): Promise<void>;
}

/** Start a cluster, or say why it cannot run here. */
export async function startCluster(): Promise<Cluster | { skip: string }> {
  if (process.getuid?.() !== 0) return { skip: "the test cluster runs its daemons as root" };
  const dir = mkdtempSync("/tmp/tl-slurm-");
  const started = await execa("bash", [SCRIPT, "start", dir], { reject: false });
  if (started.exitCode === 3) {
    rmSync(dir, { recursive: true, force: true });
    return { skip: started.stderr.trim() || "Slurm is not installed" };
  }
  if (started.exitCode !== 0)
    throw new Error(`starting the test Slurm cluster failed:\n${started.stderr}`);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith("SLURM_") && !k.startsWith("SBATCH_")) env[k] = v;
  for (const line of started.stdout.split("\n")) {
    const m = /^export ([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) env[m[1]] = m[2].replace(/^'(.*)'$/, "$1");
  }
  const run = (cmd: string, args: string[]) => execa(cmd, args, { env, reject: false });
  return {
    dir,
    env,
    async stop() {
      await execa("bash", [SCRIPT, "stop", dir], { reject: false });
      rmSync(dir, { recursive: true, force: true });
    },
    async sbatch(args) {
      const res = await run("sbatch", ["--parsable", ...args]);
      if (res.exitCode !== 0) throw new Error(`sbatch failed: ${res.stderr}`);
      return res.stdout.trim().split(";")[0];
    },
    async waitForJob(job, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const q = await run("squeue", ["-h", "-r", "-o", "%T", `--jobs=${job}`]);
        const live = q.stdout
          .split("\n")
          .map((s) => s.trim())
          .filter(
            (s) =>
              s &&
              !/^(COMPLETED|CANCELLED|FAILED|TIMEOUT|NODE_FAIL|PREEMPTED|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE)$/.test(
                s,
              ),
          );
        if (q.exitCode === 0 && live.length === 0) return;
        if (q.exitCode !== 0 && /invalid job id/i.test(q.stderr)) return;
        if (Date.now() > deadline)
          throw new Error(`job ${job} still in the queue after ${timeoutMs} ms: ${q.stdout}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    },
  };
}
