/**
 * `torchlens validate RUN` — prove a run's saved activations right by replaying the forward pass
 * (src/validate, python_agent/torchlens_agent/validate.py), and a run's gradients, when it has
 * them, by replaying each op's vector-Jacobian product (docs/gradients.md, "Validation").
 * `torchlens validate model.py [input flags]` extracts to a temporary run first. Exit 0 when
 * everything passed, 1 when a check failed (a gradient's too), 2 when the run cannot be validated
 * (damaged, another schema, the model file gone or changed).
 */
import { statSync } from "node:fs";
import type { Command } from "commander";
import { describeCheck, validateDataset } from "../dataset/dataset.js";
import { isDataset } from "../dataset/layout.js";
import { EXIT } from "../errors.js";
import { describeReport } from "../validate/report.js";
import { type ValidateOptions, validateModel, validateRun } from "../validate/validate.js";
import { addModelOptions, type Flags, modelOptions } from "./modelFlags.js";
import { integer } from "./options.js";
import { EXIT_HELP } from "./report.js";

export function register(cli: Command): void {
  addModelOptions(
    cli
      .command("validate")
      .description(
        "replay every op of a run from its saved arrays and check each result, the outputs and the graph's edges (and a --grads run's gradients)",
      )
      .argument(
        "<run|model.py>",
        "a run directory, a model file to extract into a temporary run and validate, or a dataset directory",
      )
      .option("--json", "print every verdict as JSON on stdout", false)
      .option(
        "--allow-changed-model",
        "validate even when the model file's sha256 differs from the run's",
        false,
      )
      .option("--no-dependence", "skip the check that perturbing each parent changes its child")
      .option(
        "--sample <k>",
        "for a dataset directory (torchlens dataset -o): re-extract this many of its stimuli and compare their rows",
        integer,
        8,
      ),
  )
    .addHelpText(
      "after",
      `${EXIT_HELP}  (validate: 1 when any check failed; 2 when the run cannot be validated)\n`,
    )
    .action(async (target: string, o: Flags) => {
      const opts: ValidateOptions = {
        python: o.python as string | undefined,
        allowChangedModel: Boolean(o.allowChangedModel),
        checkDependence: o.dependence !== false,
      };
      if (await isDataset(target)) {
        const summary = await validateDataset(
          target,
          {
            k: o.sample as number,
            python: o.python as string | undefined,
            device: o.device as string,
          },
          process.argv.slice(1),
        );
        if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
        else process.stderr.write(`${describeCheck(summary)}\n`);
        return;
      }
      const isModel =
        target.endsWith(".py") && statSync(target, { throwIfNoEntry: false })?.isFile();
      const report = isModel
        ? await validateModel(modelOptions(target, o), opts, process.argv.slice(1))
        : await validateRun(target, opts);
      if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
      else process.stderr.write(`${describeReport(report)}\n`);
      process.exitCode = report.ok ? EXIT.ok : EXIT.failed;
    });
}
