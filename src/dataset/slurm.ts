/**
 * `dataset submit --slurm`: the output is prepared here first (so its shapes are fixed before any
 * task starts), then one array job runs the shards not yet done, each task `torchlens dataset …
 * --shard K/N` into the same files. The job script and every submission are kept in OUT/slurm/.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";
import { TorchlensError, usageError } from "../errors.js";
import { fsError } from "../store/files.js";
import { doneBatches, readProgress, SLURM_DIR, writeJsonAtomic } from "./layout.js";
import { formatRanges, shardBatches } from "./shards.js";

export interface Submission {
  job: string;
  shards: number;
  tasks: number[];
  script: string;
  submitted: string;
  sbatch_args: string[];
}

const SUBMISSIONS = `${SLURM_DIR}/submissions.json`;

/** A word for bash: quoted unless it is plainly safe. */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The shards (1-based) with a batch not recorded done. */
export async function unfinishedShards(
  out: string,
  shards: number,
  batches: number,
): Promise<number[]> {
  const done = doneBatches(await readProgress(out));
  const todo: number[] = [];
  for (let k = 1; k <= shards; k++) {
    const { first, last } = shardBatches({ k, n: shards }, batches);
    for (let i = first; i < last; i++)
      if (!done.has(i)) {
        todo.push(k);
        break;
      }
  }
  return todo;
}

export function jobScript(out: string, command: string[], tasks: number[], shards: number): string {
  const logs = path.join(out, SLURM_DIR, "%A_%a.log");
  return [
    "#!/bin/bash",
    "# Written by torchlens dataset submit --slurm: one array task per shard of the dataset.",
    "# Each task writes its own rows and its own progress record; `torchlens dataset status` reads them.",
    "#SBATCH --job-name=torchlens-dataset",
    `#SBATCH --array=${formatRanges(tasks)}`,
    `#SBATCH --output=${logs}`,
    "set -euo pipefail",
    `cd ${shellWord(process.cwd())}`,
    `exec ${command.map(shellWord).join(" ")} --shard "\${SLURM_ARRAY_TASK_ID}/${shards}"`,
    "",
  ].join("\n");
}

export async function readSubmissions(out: string): Promise<Submission[]> {
  try {
    return JSON.parse(await fs.readFile(path.join(out, SUBMISSIONS), "utf8")) as Submission[];
  } catch {
    return [];
  }
}

/** Write the script for `tasks` and sbatch it; returns the submission. */
export async function submit(
  out: string,
  command: string[],
  tasks: number[],
  shards: number,
  sbatchArgs: string[],
): Promise<Submission> {
  const dir = path.join(out, SLURM_DIR);
  await fs.mkdir(dir, { recursive: true }).catch((err) => {
    throw fsError(err, `creating ${dir}`);
  });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const script = path.join(dir, `array-${stamp}.sh`);
  await fs.writeFile(script, jobScript(out, command, tasks, shards), { mode: 0o755 });
  let stdout: string;
  try {
    ({ stdout } = await execa("sbatch", ["--parsable", ...sbatchArgs, script], {
      stdin: "ignore",
    }));
  } catch (err) {
    const e = err as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === "ENOENT")
      throw usageError(
        "dataset submit --slurm needs sbatch, which is not on PATH",
        "run it on a Slurm login node (or load the slurm module first)",
      );
    throw new TorchlensError(
      `sbatch refused the job: ${(e.stderr || e.shortMessage || "").trim()}`,
      {
        hint: `the script is ${script}; fix the sbatch options given after --, or submit it yourself with sbatch`,
      },
    );
  }
  const job = stdout.trim().split(";")[0];
  const submission: Submission = {
    job,
    shards,
    tasks,
    script,
    submitted: new Date().toISOString(),
    sbatch_args: sbatchArgs,
  };
  await writeJsonAtomic(path.join(out, SUBMISSIONS), [...(await readSubmissions(out)), submission]);
  return submission;
}

/** States of a job that has not ended; squeue also lists ended ones for a while (MinJobAge). */
const LIVE = new Set([
  "PENDING",
  "CONFIGURING",
  "RUNNING",
  "COMPLETING",
  "SUSPENDED",
  "REQUEUED",
  "RESIZING",
]);

/**
 * Array tasks of `job` that have not ended, as "job_task" → state (PENDING, RUNNING, …); null
 * when squeue cannot be asked.
 */
export async function queued(job: string): Promise<Map<string, string> | null> {
  try {
    const { stdout, stderr, exitCode } = await execa(
      "squeue",
      ["-h", "-r", "-o", "%i %T", `--jobs=${job}`],
      {
        stdin: "ignore",
        reject: false,
      },
    );
    if (exitCode !== 0) return /invalid job id/i.test(stderr) ? new Map() : null; // an id it forgot: ended
    const states = new Map<string, string>();
    for (const line of stdout.split("\n")) {
      const [id, state] = line.trim().split(/\s+/);
      if (id && state && LIVE.has(state)) states.set(id, state);
    }
    return states;
  } catch {
    return null;
  }
}
