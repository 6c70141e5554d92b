/**
 * `torchlens dataset` (src/dataset/, docs/dataset.md): a stimulus set → one N × features .npy per
 * selected pass. `dataset submit --slurm` prepares the output and runs its shards as a Slurm
 * array job; `dataset status` tells which shards and batches are done.
 */
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Command, InvalidArgumentError } from "commander";
import { type DatasetSummary, describeDataset, runDataset } from "../dataset/dataset.js";
import type { DatasetOptions } from "../dataset/options.js";
import { parseShard } from "../dataset/shards.js";
import { submit, unfinishedShards } from "../dataset/slurm.js";
import { type DatasetStatus, datasetStatus } from "../dataset/status.js";
import { EXIT, usageError } from "../errors.js";
import { renderTable, terminalWidth, writeStdout } from "../ui/table.js";
import type { Flags } from "./modelFlags.js";
import { collect, integer } from "./options.js";
import { EXIT_HELP } from "./report.js";

function positive(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1)
    throw new InvalidArgumentError("not a whole number of at least 1");
  return Number(value);
}

function choice<T extends string>(values: T[]) {
  return (value: string): T => {
    if (!values.includes(value as T))
      throw new InvalidArgumentError(`choose one of ${values.join(", ")}`);
    return value as T;
  };
}

const DEFAULT_WORKERS = Math.max(1, Math.min(8, os.cpus().length - 1));

function addDatasetOptions(cmd: Command): Command {
  return cmd
    .option(
      "-o, --out <dir>",
      "the dataset directory (made if missing; an existing one is resumed)",
    )
    .option(
      "-l, --layers <selectors>",
      "passes to save, as extract --layers takes them (e.g. layer1@out,fc: module outputs, functions, labels)",
      collect,
    )
    .option("-b, --batch-size <n>", "stimuli per forward", positive, 32)
    .option(
      "--workers <n>",
      "processes decoding stimuli while the forward runs (0: none)",
      integer,
      DEFAULT_WORKERS,
    )
    .option(
      "--dtype <dtype>",
      "store rows as float16, float32 or float64 (default: the pass's own)",
      choice(["float16", "float32", "float64"]),
    )
    .option("--flatten", "one vector per stimulus (N × features)", false)
    .option("--pool <how>", "mean: average conv maps over space (N × C)", choice(["mean"]))
    .option(
      "--preset <name>",
      "image preprocessing: imagenet (resize 256, crop 224, normalise) or none",
      choice(["imagenet", "none"]),
    )
    .option("--size <n>", "crop size of the preset (default 224)", positive)
    .option(
      "--skip-bad",
      "record unreadable stimuli (their rows are NaN) instead of stopping",
      false,
    )
    .option(
      "--check <k>",
      "then re-extract K stimuli one at a time and compare their rows",
      integer,
      0,
    )
    .option("-m, --model <name>", "the nn.Module instance, class or factory in the file to use")
    .option("-d, --device <device>", "cpu, cuda or cuda:N", "cpu")
    .option("--seed <n>", "random seed (batch i runs with seed + i)", integer, 0)
    .option("--grad", "run the forward with autograd on")
    .option(
      "--python <path>",
      "Python interpreter with torch (default: $TORCHLENS_PYTHON, then python3, …)",
    )
    .option("-v, --verbose", "show the agent's stderr and stack traces on errors", false);
}

function datasetOptions(modelFile: string, stimuli: string | undefined, o: Flags): DatasetOptions {
  if (!o.out)
    throw usageError(
      "torchlens dataset needs -o DIR: where the matrices go",
      "add -o features/ (a new directory, or one to resume)",
    );
  return {
    modelFile,
    model: o.model as string | undefined,
    stimuli: stimuli ?? null,
    out: o.out as string,
    layers: ((o.layers as string[] | undefined) ?? [])
      .flatMap((s) => s.split(","))
      .map((s) => s.trim())
      .filter(Boolean),
    batchSize: o.batchSize as number,
    workers: o.workers as number,
    dtype: (o.dtype as DatasetOptions["dtype"]) ?? null,
    flatten: Boolean(o.flatten),
    pool: (o.pool as DatasetOptions["pool"]) ?? null,
    preset: (o.preset as DatasetOptions["preset"]) ?? null,
    size: (o.size as number | undefined) ?? null,
    seed: o.seed as number,
    grad: o.grad === true,
    device: o.device as string,
    python: o.python as string | undefined,
    shard: o.shard ? parseShard(o.shard as string) : null,
    skipBad: Boolean(o.skipBad),
    check: (o.check as number) ?? 0,
  };
}

/** The command each array task runs: this CLI, by absolute paths, with the same dataset flags. */
function taskCommand(opts: DatasetOptions): string[] {
  const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bin/torchlens.js");
  const args = [process.execPath, bin, "dataset", path.resolve(opts.modelFile)];
  if (opts.stimuli) args.push(path.resolve(opts.stimuli));
  args.push("-o", path.resolve(opts.out), "--layers", opts.layers.join(","));
  args.push(
    "--batch-size",
    String(opts.batchSize),
    "--workers",
    String(opts.workers),
    "--seed",
    String(opts.seed),
  );
  args.push("--device", opts.device);
  if (opts.model) args.push("--model", opts.model);
  if (opts.dtype) args.push("--dtype", opts.dtype);
  if (opts.flatten) args.push("--flatten");
  if (opts.pool) args.push("--pool", opts.pool);
  if (opts.preset) args.push("--preset", opts.preset);
  if (opts.size) args.push("--size", String(opts.size));
  if (opts.grad) args.push("--grad");
  if (opts.skipBad) args.push("--skip-bad");
  if (opts.python) args.push("--python", path.resolve(opts.python));
  return args;
}

function printStatus(s: DatasetStatus): string {
  const where = path.relative(process.cwd(), s.dataset) || ".";
  const head = `${where}: ${s.model}, ${s.stimuli} stimuli, ${s.layers} layers, ${s.batches.done} of ${s.batches.count} batches done — ${s.complete ? "complete" : "incomplete"}`;
  const table = s.shards.length
    ? `${renderTable(
        [
          { header: "shard", keep: true },
          { header: "batches" },
          { header: "done", align: "right" },
          { header: "state" },
          { header: "host" },
          { header: "job", keep: true },
          { header: "updated" },
          { header: "why" },
        ],
        s.shards.map((r) => [
          r.shard,
          r.batches,
          `${r.done}/${r.total}`,
          r.state,
          r.host,
          r.job,
          r.updated,
          r.why,
        ]),
        { width: terminalWidth() },
      )}\n`
    : "no task has started yet\n";
  const todo = s.complete ? "" : s.batches.todo ? `batches to do: ${s.batches.todo}\n` : "";
  const bad = s.bad.length
    ? `${s.bad.length} unreadable stimuli (rows hold NaN):\n${s.bad
        .slice(0, 10)
        .map((b) => `  row ${b.row} ${b.id}: ${b.message}\n`)
        .join("")}`
    : "";
  return `${head}\n${table}${todo}${bad}`;
}

/** A result line for people, or the summary as JSON. */
async function report(summary: DatasetSummary, json: boolean): Promise<void> {
  if (json) await writeStdout(`${JSON.stringify(summary)}\n`);
  else process.stderr.write(`${describeDataset(summary)}\n`);
}

export function register(cli: Command): void {
  const dataset = addDatasetOptions(
    cli
      .command("dataset")
      .enablePositionalOptions()
      .description(
        "run the model over a stimulus set: one N × features .npy per selected pass, resumable and shardable",
      )
      .argument(
        "<model.py>",
        "Python file defining the model (and optionally stimuli(), load_stimulus(), transform())",
      )
      .argument(
        "[stimuli]",
        "a folder of images, a .txt list of paths, a .npy/.pt array (omit when the file defines stimuli())",
      )
      .option(
        "--shard <K/N>",
        "run shard K of N (contiguous blocks of batches); in a Slurm array the task's own",
      )
      .option("--json", "print the summary as JSON on stdout", false),
  )
    .addHelpText(
      "after",
      `${EXIT_HELP}\nSee docs/dataset.md for the output and a worked example.\n`,
    )
    .action(async (modelFile: string, stimuli: string | undefined, o: Flags) => {
      const summary = await runDataset(
        datasetOptions(modelFile, stimuli, o),
        process.argv.slice(1),
      );
      await report(summary, Boolean(o.json));
    });

  addDatasetOptions(
    dataset
      .command("submit")
      .description("prepare the output here, then run its unfinished shards as one Slurm array job")
      .argument("<model.py>", "as for torchlens dataset")
      .argument("[stimuli]", "as for torchlens dataset")
      .option("--slurm", "submit with sbatch (the only scheduler so far)", false)
      .option("--shards <n>", "how many shards (array tasks)", positive, 1)
      .option("--json", "print the submission as JSON on stdout", false)
      .allowExcessArguments(true)
      .usage("--slurm <model.py> [stimuli] -o DIR --shards N [options] [-- sbatch options]"),
  ).action(async (modelFile: string, stimuli: string | undefined, o: Flags) => {
    if (!o.slurm)
      throw usageError(
        "dataset submit needs a scheduler: --slurm",
        "add --slurm (and sbatch options after --)",
      );
    const dash = process.argv.indexOf("--");
    const sbatchArgs = dash >= 0 ? process.argv.slice(dash + 1) : [];
    const opts = datasetOptions(modelFile, stimuli, o);
    const prepared = await runDataset(opts, process.argv.slice(1), "prepare");
    const shards = o.shards as number;
    const out = path.resolve(opts.out);
    const tasks = await unfinishedShards(out, shards, Math.ceil(prepared.stimuli / opts.batchSize));
    if (!tasks.length) {
      process.stderr.write(`every shard of ${opts.out} is done; nothing to submit\n`);
      if (o.json) await writeStdout(`${JSON.stringify({ job: null, tasks: [] })}\n`);
      return;
    }
    const sub = await submit(out, taskCommand(opts), tasks, shards, sbatchArgs);
    if (o.json) await writeStdout(`${JSON.stringify(sub)}\n`);
    else
      process.stderr.write(
        `submitted job ${sub.job}: ${tasks.length} of ${shards} shards (${sub.script}); follow it with: torchlens dataset status ${opts.out}\n`,
      );
  });

  dataset
    .command("status")
    .description("which shards and batches of a dataset are done, running, failed or interrupted")
    .argument("<dir>", "a dataset directory")
    .option("--json", "print the status as JSON on stdout", false)
    .action(async (dir: string, o: Flags) => {
      const s = await datasetStatus(dir);
      await writeStdout(o.json ? `${JSON.stringify(s)}\n` : printStatus(s));
      process.exitCode = EXIT.ok;
    });
}
