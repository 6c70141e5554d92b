/** The flags that say how to run a model, shared by `extract` and `validate model.py`. */
import type { Command } from "commander";
import type { ModelOptions } from "../extract/extract.js";
import { collect, integer } from "./options.js";

export function addModelOptions(cmd: Command): Command {
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

/** Commander's parsed flags, as an action receives them. */
export type Flags = Record<string, unknown>;

export function modelOptions(modelFile: string, o: Flags): ModelOptions {
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
  };
}
