/** The `torchlens` command line: flags and help; each command's work lives in its own file. */
import { statSync } from "node:fs";
import { Command, InvalidArgumentError } from "commander";
import { EXIT } from "../errors.js";
import { guardStdout } from "../ui/table.js";
import { describeReport } from "../validate/report.js";
import { describeSummary, type ExtractOptions, extract, TOOL_VERSION } from "./extract.js";
import { register as registerGraph } from "./graph.js";
import { register as registerLs } from "./ls.js";
import { register as registerProfile } from "./profile.js";
import { reportError } from "./report.js";
import { register as registerShow } from "./show.js";
import { exitCodeFor, validateModel, validateRun } from "./validate.js";

const EXIT_HELP = `
Exit codes:
  0    success
  1    the model or the agent failed (the forward pass raised, the agent died), or a check failed
  2    bad input or usage (a missing file, a bad flag, no Python with torch, a damaged run)
  130  interrupted (Ctrl-C); 143 stopped by SIGTERM
`;

function integer(value: string): number {
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError("not an integer");
  return Number(value);
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** The flags that say how to run a model: shared by extract and validate model.py. */
function addModelOptions(cmd: Command): Command {
  return cmd
    .option(
      "-i, --input <file>",
      "input: .pt (tensor, tuple/list of args, or {args, kwargs}), .npy, or - for stdin",
    )
    .option(
      "--input-shape <shape>",
      "random normal input of this shape, e.g. 1,3,224,224 (repeat for several inputs)",
      collect,
    )
    .option("--input-dtype <dtype>", "dtype for --input-shape", "float32")
    .option("-m, --model <name>", "the nn.Module instance, class or factory in the file to use")
    .option("-d, --device <device>", "cpu, cuda or cuda:N", "cpu")
    .option(
      "--seed <n>",
      "random seed for the model, the inputs and ops inside forward",
      integer,
      0,
    )
    .option(
      "--python <path>",
      "Python interpreter with torch (default: $TORCHLENS_PYTHON, then python3, python, /usr/bin/python3)",
    )
    .option(
      "--grad",
      "run the forward pass with autograd on, as training code does: fused inference kernels then show their inside",
    )
    .option(
      "--no-grad",
      "run the forward pass under torch.no_grad(), as inference code does (the default)",
    )
    .option(
      "--allow-pickle",
      "let torch.load unpickle arbitrary objects in --input (only for files you trust)",
      false,
    )
    .option("-v, --verbose", "show the agent's stderr and stack traces on errors", false);
}

type ModelFlags = Record<string, unknown>;

function modelOptions(
  modelFile: string,
  o: ModelFlags,
): Omit<ExtractOptions, "out" | "force" | "json" | "layers"> {
  return {
    modelFile,
    input: o.input as string | undefined,
    inputShape: o.inputShape as string[] | undefined,
    inputDtype: o.inputDtype as string,
    model: o.model as string | undefined,
    device: o.device as string,
    seed: o.seed as number,
    python: o.python as string | undefined,
    allowPickle: Boolean(o.allowPickle),
    // --no-grad is the default: the forward pass inference code runs (docs/capture.md)
    grad: o.grad === true,
    verbose: Boolean(o.verbose),
  };
}

export function program(): Command {
  const cli = new Command("torchlens")
    .description(
      "Record every tensor operation of a PyTorch model's forward pass: activations to npz, a JSON layer log.",
    )
    .version(TOOL_VERSION)
    .addHelpText("after", EXIT_HELP)
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .exitOverride();

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
      .option("--json", "print the summary as JSON on stdout", false),
  )
    .addHelpText("after", EXIT_HELP)
    .action(async (modelFile: string, o: ModelFlags) => {
      const stem = modelFile.replace(/^.*[\\/]/, "").replace(/\.py$/, "");
      const summary = await extract(
        {
          ...modelOptions(modelFile, o),
          out: (o.out as string | undefined) ?? `runs/${stem}`,
          force: Boolean(o.force),
          json: Boolean(o.json),
          layers: o.layers as string[] | undefined,
          graph: Boolean(o.graph),
        },
        process.argv.slice(1),
      );
      if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      else process.stderr.write(`${describeSummary(summary)}\n`);
    });

  addModelOptions(
    cli
      .command("validate")
      .description(
        "replay every op of a run from its saved arrays and check each result, the outputs and the graph's edges",
      )
      .argument(
        "<run|model.py>",
        "a run directory, or a model file to extract into a temporary run and validate",
      )
      .option("--json", "print every verdict as JSON on stdout", false)
      .option(
        "--allow-changed-model",
        "validate even when the model file's sha256 differs from the run's",
        false,
      )
      .option("--no-dependence", "skip the check that perturbing each parent changes its child"),
  )
    .addHelpText(
      "after",
      `${EXIT_HELP}  (validate: 1 when any check failed; 2 when the run cannot be validated)\n`,
    )
    .action(async (target: string, o: ModelFlags) => {
      const vopts = {
        python: o.python as string | undefined,
        allowChangedModel: Boolean(o.allowChangedModel),
        checkDependence: o.dependence !== false,
        verbose: Boolean(o.verbose),
      };
      const isModel =
        target.endsWith(".py") && statSync(target, { throwIfNoEntry: false })?.isFile();
      const report = isModel
        ? await validateModel(modelOptions(target, o), vopts, process.argv.slice(1))
        : await validateRun(target, vopts);
      if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
      else process.stderr.write(`${describeReport(report)}\n`);
      process.exitCode = exitCodeFor(report);
    });

  registerLs(cli);
  registerShow(cli);
  registerProfile(cli);
  registerGraph(cli);
  return cli;
}

export async function main(argv: string[] = process.argv): Promise<number> {
  guardStdout(); // `torchlens ls run --json | head -1`: a reader that goes away is not a crash
  const verbose = argv.includes("--verbose") || argv.includes("-v");
  try {
    process.exitCode = undefined;
    await program().parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : EXIT.ok;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (typeof code === "string" && code.startsWith("commander.")) {
      const exitCode = (err as { exitCode?: number }).exitCode ?? EXIT.usage;
      return code === "commander.helpDisplayed" ||
        code === "commander.version" ||
        code === "commander.help"
        ? EXIT.ok
        : exitCode === 0
          ? 0
          : EXIT.usage;
    }
    return reportError(err, verbose);
  }
}
