/**
 * --grads, --target, --loss, --param-grads (docs/gradients.md): the flags checked and turned into
 * what the agent is asked (the request's `grads`) and what the log records (`gradients.target`).
 */
import { usageError } from "../errors.js";
import type { GradTarget } from "../log/types.js";

export interface GradFlags {
  grads?: boolean;
  target?: string;
  loss?: string;
  paramGrads?: boolean;
  /** The forward pass's grad mode as given: true for --grad, false for --no-grad, undefined for neither. */
  gradMode?: boolean;
}

/** What extract asks for: the target in the log's terms and as the agent's request carries it. */
export interface GradRequest {
  target: GradTarget;
  request: {
    target:
      | { kind: "sum" }
      | { kind: "index"; output: number; index: number[] }
      | {
          kind: "loss";
          function: string;
        };
    params: boolean;
  };
}

const TARGET = /^\s*output_(\d+)\s*(?:\[([^\]]*)\])?\s*$/;

/** `output_K[i, j]` → (K, [i, j]); anything else is a usage error naming the form. */
export function parseTarget(text: string): { output: number; index: number[] } {
  const m = TARGET.exec(text);
  const bad = () =>
    usageError(
      `--target ${JSON.stringify(text)} is not an output and an index`,
      "write it as output_K[i, j, ...]: output_K is an output's label (output_1 for the first), the index integers picking one element, e.g. --target 'output_1[0, 207]'",
    );
  if (!m) throw bad();
  const output = Number(m[1]);
  if (output < 1) throw bad();
  const inside = m[2]?.trim() ?? "";
  const index = inside === "" ? [] : inside.split(",").map((s) => s.trim());
  if (!index.every((s) => /^-?\d+$/.test(s))) throw bad();
  return { output, index: index.map(Number) };
}

/** The gradient request of the flags, or null without --grads; inconsistent flags are usage errors. */
export function gradRequest(f: GradFlags): GradRequest | null {
  if (!f.grads) {
    const stray =
      f.target !== undefined
        ? "--target"
        : f.loss !== undefined
          ? "--loss"
          : f.paramGrads
            ? "--param-grads"
            : null;
    if (stray)
      throw usageError(`${stray} is only meaningful with --grads`, `add --grads, or drop ${stray}`);
    return null;
  }
  if (f.gradMode === false)
    throw usageError(
      "--grads needs the forward pass to run with autograd on, and --no-grad turns it off",
      "drop --no-grad: --grads runs the forward pass with autograd on",
    );
  if (f.target !== undefined && f.loss !== undefined)
    throw usageError(
      "--target and --loss both name the gradient target",
      "give one: --target output_K[index] for one output element, or --loss NAME for a loss function in the model file",
    );
  const params = Boolean(f.paramGrads);
  if (f.loss !== undefined) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(f.loss))
      throw usageError(
        `--loss ${JSON.stringify(f.loss)} is not a Python name`,
        "give the name of a function defined in the model file, e.g. --loss loss_fn",
      );
    return {
      target: { kind: "loss", function: f.loss },
      request: { target: { kind: "loss", function: f.loss }, params },
    };
  }
  if (f.target !== undefined) {
    const { output, index } = parseTarget(f.target);
    return {
      target: { kind: "index", output: `output_${output}`, index },
      request: { target: { kind: "index", output, index }, params },
    };
  }
  return { target: { kind: "sum" }, request: { target: { kind: "sum" }, params } };
}
