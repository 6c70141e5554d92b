/**
 * What the agent needs to validate a run: every pass it must meet, in order, with the array that
 * holds its saved value, and the outputs for the ground-truth check.
 */
import type { OutputStructure, RunLog } from "../log/types.js";

export interface ExpectedPass {
  id: number;
  func: string;
  kind: string;
  shape: number[];
  dtype: string;
  array: string | null;
  /** Parent pass ids, in argument order, as the log records them. */
  parents: number[];
}

export interface ValidationPlan {
  expected: ExpectedPass[];
  /** The run's output passes in the order the model returns them. */
  outputs: { id: number; array: string | null; dtype: string }[];
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
  const expected = log.passes.map((p) => ({
    id: p.id,
    func: p.func,
    kind: p.kind,
    shape: p.shape,
    dtype: p.dtype,
    array: p.array,
    parents: p.parents.map((l) => byLabel.get(l) ?? -1),
  }));
  const byId = new Map(log.passes.map((p) => [p.id, p]));
  const outputs = outputIdsInOrder(log.output_structure as OutputStructure, byLabel).map((id) => {
    const p = byId.get(id);
    return { id, array: p?.array ?? null, dtype: p?.dtype ?? "" };
  });
  return { expected, outputs };
}
