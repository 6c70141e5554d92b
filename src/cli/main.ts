/** The `torchlens` command line: flags and help; each command's work lives in its own file. */
import { Command, InvalidArgumentError, Option } from "commander";
import { EXIT } from "../errors.js";
import { TOOL_VERSION, describeSummary, extract } from "./extract.js";
import { reportError } from "./report.js";

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

export function program(): Command {
  const cli = new Command("torchlens")
    .description("Record every tensor operation of a PyTorch model's forward pass: activations to npz, a JSON layer log.")
    .version(TOOL_VERSION)
    .addHelpText("after", EXIT_HELP)
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .exitOverride();

  cli
    .command("extract")
    .description("run the model once, saving every op's output to RUN/activations.npz and the layer log to RUN/log.json")
    .argument("<model.py>", "Python file defining the model: build_model(), `model`, or --model NAME")
    .option("-o, --out <dir>", "run directory to create (default: runs/<model file name>)")
    .option("-i, --input <file>", "input: .pt (tensor, tuple/list of args, or {args, kwargs}), .npy, or - for stdin")
    .option("--input-shape <shape>", "random normal input of this shape, e.g. 1,3,224,224 (repeat for several inputs)", collect)
    .option("--input-dtype <dtype>", "dtype for --input-shape", "float32")
    .option("-m, --model <name>", "the nn.Module instance, class or factory in the file to use")
    .option("-d, --device <device>", "cpu, cuda or cuda:N", "cpu")
    .option("--seed <n>", "random seed for the model, the inputs and ops inside forward", integer, 0)
    .option("-l, --layers <selectors>", "save only these passes (comma-separated: labels, layer labels, functions, module addresses, ordinals, globs); the log still lists every pass", collect)
    .option("-f, --force", "replace an existing run, once the new one is complete", false)
    .option("--python <path>", "Python interpreter with torch (default: $TORCHLENS_PYTHON, then python3, python, /usr/bin/python3)")
    .option("--allow-pickle", "let torch.load unpickle arbitrary objects in --input (only for files you trust)", false)
    .option("--json", "print the summary as JSON on stdout", false)
    .option("-v, --verbose", "show the agent's stderr and stack traces on errors", false)
    .addHelpText("after", EXIT_HELP)
    .action(async (modelFile: string, o) => {
      const stem = modelFile.replace(/^.*[\\/]/, "").replace(/\.py$/, "");
      const summary = await extract(
        {
          modelFile,
          out: o.out ?? `runs/${stem}`,
          input: o.input,
          inputShape: o.inputShape,
          inputDtype: o.inputDtype,
          model: o.model,
          device: o.device,
          seed: o.seed,
          force: o.force,
          python: o.python,
          allowPickle: o.allowPickle,
          layers: o.layers,
          json: o.json,
          verbose: o.verbose,
        },
        process.argv.slice(1),
      );
      if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      else process.stderr.write(`${describeSummary(summary)}\n`);
    });
  return cli;
}

export async function main(argv: string[] = process.argv): Promise<number> {
  const verbose = argv.includes("--verbose") || argv.includes("-v");
  try {
    await program().parseAsync(argv);
    return EXIT.ok;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (typeof code === "string" && code.startsWith("commander.")) {
      const exitCode = (err as { exitCode?: number }).exitCode ?? EXIT.usage;
      return code === "commander.helpDisplayed" || code === "commander.version" || code === "commander.help" ? EXIT.ok : exitCode === 0 ? 0 : EXIT.usage;
    }
    return reportError(err, verbose);
  }
}
