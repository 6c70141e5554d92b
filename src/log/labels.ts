/**
 * Readable labels in TorchLens's scheme: `{func}_{index among layers of that func}_{index among
 * all op layers}` (`conv2d_3_7`), plus `:{pass}` when a layer runs more than once
 * (`linear_1_2:3`). Sources and outputs count on their own: `input_1`, `buffer_2`, `constant_1`,
 * `output_1`. Labels depend only on execution order, so the same model and input give the same
 * labels on every run.
 */
import type { OpRecord } from "./types.js";

const SOURCE_KINDS = new Set(["input", "buffer", "constant", "output"]);

export interface Labelled {
  /** Layer label per op (index-aligned with the ops). */
  layer: string[];
  /** Pass label per op. */
  label: string[];
  /** 1-based pass number per op, and the layer's pass count. */
  pass: number[];
  numPasses: number[];
}

/**
 * Label every op, given which layer each belongs to (`layerOf[i]`: a layer key, equal for the
 * passes of one layer). Layers are numbered in the order of their first pass.
 */
export function labelOps(ops: OpRecord[], layerOf: number[]): Labelled {
  const layerLabel = new Map<number, string>();
  const passCount = new Map<number, number>();
  const funcCount = new Map<string, number>();
  let opLayers = 0;
  const layer: string[] = [];
  const pass: number[] = [];
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    const key = layerOf[i];
    let label = layerLabel.get(key);
    if (label === undefined) {
      if (SOURCE_KINDS.has(op.kind)) {
        const n = (funcCount.get(`#${op.kind}`) ?? 0) + 1;
        funcCount.set(`#${op.kind}`, n);
        label = `${op.kind}_${n}`;
      } else {
        const name = op.name;
        const n = (funcCount.get(name) ?? 0) + 1;
        funcCount.set(name, n);
        opLayers += 1;
        label = `${name}_${n}_${opLayers}`;
      }
      layerLabel.set(key, label);
    }
    const p = (passCount.get(key) ?? 0) + 1;
    passCount.set(key, p);
    layer.push(label);
    pass.push(p);
  }
  const numPasses = layerOf.map((key) => passCount.get(key) ?? 1);
  const label = layer.map((l, i) => (numPasses[i] > 1 ? `${l}:${pass[i]}` : l));
  return { layer, label, pass, numPasses };
}
