/**
 * Gradients in the layer log (docs/gradients.md): each selected pass's `grad` (saved, or none when
 * the target does not depend on it) and the log's `gradients` summary, from the agent's `grad`
 * frames. The bytes themselves are the recorder's business.
 */
import { GRADIENTS } from "../store/files.js";
import type { GradRecord, Recorded } from "../store/recorder.js";
import type { GradTarget, ParamGrad, RunLog } from "./types.js";

/** Fill in `grad` for every saved pass and the log's `gradients`. */
export function attachGradients(log: RunLog, recorded: Recorded, target: GradTarget): void {
  const byId = new Map<number, GradRecord>();
  const params: ParamGrad[] = [];
  for (const g of recorded.grads) {
    if (g.param !== undefined)
      params.push({
        address: g.param,
        array: `param:${g.param}`,
        shape: g.shape,
        dtype: g.dtype,
        norm: g.norm,
      });
    else byId.set(g.id, g);
  }
  let numSaved = 0;
  for (const p of log.passes) {
    if (!p.saved) continue; // --layers selects gradients as it selects activations
    const g = byId.get(p.id);
    if (!g) {
      p.grad = { status: "none" };
      continue;
    }
    numSaved++;
    p.grad = {
      status: "saved",
      array: p.label,
      shape: g.shape,
      dtype: g.dtype,
      stored_dtype: g.stored_dtype,
      norm: g.norm,
    };
  }
  log.gradients = {
    file: GRADIENTS,
    target,
    value: recorded.raw.targetValue ?? null,
    num_saved: numSaved,
    params,
    backward_ms: Math.round((recorded.raw.backwardMs ?? 0) * 10) / 10,
  };
}
