/**
 * `torchlens extract`: its flags, the run (src/extract/), the summary on stderr or as JSON on
 * stdout, and with --graph the rolled graph drawn into the finished run.
 */
import path from "node:path";
import type { Command } from "commander";
import { type AfterCommit, type ExtractSummary, extract } from "../extract/extract.js";
import { gradRequest } from "../extract/grads.js";
import { formatBytes, formatMs } from "../ui/format.js";
import { writeGraph } from "./graph.js";
import { addModelOptions, type Flags, modelOptions } from "./modelFlags.js";
import { collect } from "./options.js";
import { EXIT_HELP } from "./report.js";

export function describeSummary(s: ExtractSummary): string {
  return (
    `extracted ${s.passes} passes in ${s.layers} layers of ${s.model}, ${s.saved} arrays (${formatBytes(s.bytes)}) ` +
    `in ${formatMs(s.wall_ms)} (forward pass ${formatMs(s.forward_ms)}) → ${path.relative(process.cwd(), s.run) || "."}`
  );
}

/** --graph: the graph is derived from log.json, so a failed drawing does not undo the run. */
const drawGraph: AfterCommit = async (log, run, progress) => {
  try {
    await writeGraph(log, { out: path.join(run, "graph.svg"), progress });
  } catch (err) {
    progress.stop();
    process.stderr.write(
      `torchlens: warning: the run is complete but drawing its graph failed: ${(err as Error).message}\n` +
        `fix: run torchlens graph ${path.relative(process.cwd(), run) || "."} (see torchlens graph --help)\n`,
    );
  }
};

/** --grad / --no-grad as given on the command line (the last wins), undefined for neither. */
function explicitGradMode(): boolean | undefined {
  let mode: boolean | undefined;
  for (const arg of process.argv) {
    if (arg === "--grad") mode = true;
    else if (arg === "--no-grad") mode = false;
  }
  return mode;
}

export function register(cli: Command): void {
  addModelOptions(
    cli
      .command("extract")
      .description(
        "run the model once, saving every op's output to RUN/activations.npz and the layer log to RUN/log.json",
      )
      .argument(
        "<model.py>",
        "Python file defining the model: build_model(), `model`, or --model NAME",
      )
      .option("-o, --out <dir>", "run directory to create (default: runs/<model file name>)")
      .option(
        "-l, --layers <selectors>",
        "save only these passes (comma-separated: labels, layer labels, functions, module addresses, ordinals, globs); the log still lists every pass",
        collect,
      )
      .option("-f, --force", "replace an existing run, once the new one is complete", false)
      .option(
        "--graph",
        "also draw the rolled graph into RUN/graph.svg (torchlens graph draws others)",
        false,
      )
      .option(
        "--grads",
        "also run one backward pass and save the gradient of the target with respect to every saved pass, to RUN/gradients.npz (implies --grad)",
        false,
      )
      .option(
        "--target <output[index]>",
        "with --grads: the gradient target, one element of an output, e.g. 'output_1[0, 207]' (default: the sum of the outputs)",
      )
      .option(
        "--loss <name>",
        "with --grads: the target is NAME(output, *inputs), a function of the model file returning a scalar",
      )
      .option("--param-grads", "with --grads: save the parameters' gradients too", false)
      .option("--json", "print the summary as JSON on stdout", false),
  )
    .addHelpText("after", EXIT_HELP)
    .action(async (modelFile: string, o: Flags) => {
      const stem = modelFile.replace(/^.*[\\/]/, "").replace(/\.py$/, "");
      const grads = gradRequest({
        grads: Boolean(o.grads),
        target: o.target as string | undefined,
        loss: o.loss as string | undefined,
        paramGrads: Boolean(o.paramGrads),
        gradMode: explicitGradMode(),
      });
      const model = modelOptions(modelFile, o);
      const summary = await extract(
        {
          ...model,
          grad: model.grad || grads !== null,
          grads,
          out: (o.out as string | undefined) ?? `runs/${stem}`,
          force: Boolean(o.force),
          layers: o.layers as string[] | undefined,
        },
        process.argv.slice(1),
        o.graph ? drawGraph : undefined,
      );
      if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      else process.stderr.write(`${describeSummary(summary)}\n`);
    });
}
