/**
 * What the agent needs to validate a run: every pass it must meet, in order, with the array that
 * holds its saved value, and the outputs for the ground-truth check; for a run with gradients,
 * each pass's saved gradient, the target and the saved parameter gradients (docs/gradients.md).
 */
import type { GradTarget, OutputStructure, RunLog } from "../log/types.js";

export interface ExpectedPass {
  id: number;
  func: string;
  kind: string;
  shape: number[];
  dtype: string;
  array: string | null;
  /** Parent pass ids, in argument order, as the log records them. */
  parents: number[];
  /**
   * Only in runs with gradients: the pass's gradient as the log records it, null when it was not
   * recorded (--layers), `none` when the target does not depend on the pass.
   */
  grad?: { status: "none" } | { status: "saved"; array: string } | null;
}

/** The gradient target as the agent's requests carry it (python_agent/.../capture/grads.py). */
export type AgentGradTarget =
  | { kind: "sum" }
  | { kind: "index"; output: number; index: number[] }
  | { kind: "loss"; function: string };

/** What the agent needs to check a run's gradients: the request's `gradients`, less the file. */
export interface GradientsPlan {
  target: AgentGradTarget;
  /** The saved parameter gradients (--param-grads): address, key in gradients.npz, dtype. */
  params: { address: string; array: string; dtype: string }[];
}

export interface ValidationPlan {
  expected: ExpectedPass[];
  /** The run's output passes in the order the model returns them. */
  outputs: { id: number; array: string | null; dtype: string }[];
  /** null for a run without gradients. */
  gradients: GradientsPlan | null;
}

/** The log's target (`output_K` a label) as the agent takes it (`K` the output's number). */
export function agentTarget(target: GradTarget): AgentGradTarget {
  if (target.kind === "index") {
    const m = /^output_(\d+)$/.exec(target.output);
    if (!m)
      throw new Error(
        `gradient target output ${JSON.stringify(target.output)} is not an output label`,
      );
    return { kind: "index", output: Number(m[1]), index: target.index };
  }
  if (target.kind === "loss") return { kind: "loss", function: target.function };
  return { kind: "sum" };
}

function outputIdsInOrder(structure: unknown, byLabel: Map<string, number>): number[] {
  const s = structure as { kind: string; pass?: string; items?: unknown };
  if (s.kind === "tensor" && s.pass) return [byLabel.get(s.pass) as number];
  if ((s.kind === "tuple" || s.kind === "list") && Array.isArray(s.items))
    return s.items.flatMap((x) => outputIdsInOrder(x, byLabel));
  if (s.kind === "dict" && s.items && typeof s.items === "object")
    return Object.values(s.items).flatMap((x) => outputIdsInOrder(x, byLabel));
  return [];
}

export function validationPlan(log: RunLog): ValidationPlan {
  const byLabel = new Map(log.passes.map((p) => [p.label, p.id]));
  const grads = log.gradients ?? null;
  const expected = log.passes.map((p) => {
    const e: ExpectedPass = {
      id: p.id,
      func: p.func,
      kind: p.kind,
      shape: p.shape,
      dtype: p.dtype,
      array: p.array,
      parents: p.parents.map((l) => byLabel.get(l) ?? -1),
    };
    if (grads) {
      const g = p.grad ?? null;
      e.grad = !g
        ? null
        : g.status === "saved"
          ? { status: "saved", array: g.array }
          : { status: "none" };
    }
    return e;
  });
  const byId = new Map(log.passes.map((p) => [p.id, p]));
  const outputs = outputIdsInOrder(log.output_structure as OutputStructure, byLabel).map((id) => {
    const p = byId.get(id);
    return { id, array: p?.array ?? null, dtype: p?.dtype ?? "" };
  });
  const gradients: GradientsPlan | null = grads
    ? {
        target: agentTarget(grads.target),
        params: grads.params.map((q) => ({ address: q.address, array: q.array, dtype: q.dtype })),
      }
    : null;
  return { expected, outputs, gradients };
}
