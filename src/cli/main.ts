/**
 * The `torchlens` program: its name, version and help, the commands (each registers itself from
 * its own file), and how the process ends: exit codes and error reports.
 */
import { Command } from "commander";
import { EXIT } from "../errors.js";
import { guardStdout } from "../ui/table.js";
import { TOOL_VERSION } from "../version.js";
import { register as registerDataset } from "./dataset.js";
import { register as registerExtract } from "./extract.js";
import { register as registerGraph } from "./graph.js";
import { register as registerLs } from "./ls.js";
import { register as registerProfile } from "./profile.js";
import { EXIT_HELP, reportError } from "./report.js";
import { register as registerShow } from "./show.js";
import { register as registerValidate } from "./validate.js";

export function program(): Command {
  const cli = new Command("torchlens")
    .description(
      "Record every tensor operation of a PyTorch model's forward pass: activations to npz, a JSON layer log.",
    )
    .version(TOOL_VERSION)
    .addHelpText("after", EXIT_HELP)
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .exitOverride()
    // a subcommand's options are its own (`dataset status DIR --json`, not dataset's --json)
    .enablePositionalOptions();
  registerExtract(cli);
  registerValidate(cli);
  registerLs(cli);
  registerShow(cli);
  registerProfile(cli);
  registerGraph(cli);
  registerDataset(cli);
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
