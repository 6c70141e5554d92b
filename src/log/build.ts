/**
 * records → passes → layers → modules: the pipeline that turns what the agent said (RawRun) into
 * the layer log (RunLog). Each step is a pure function.
 */
import { labelOps } from "./labels.js";
import {
  LOG_SCHEMA,
  type Layer,
  type ModuleEntry,
  type OpRecord,
  type OutputStructure,
  type Pass,
  type RawRun,
  type RunLog,
} from "./types.js";

/**
 * Which layer each op belongs to. For now every op is its own layer with one pass; loop grouping
 * (the same layer run several times) plugs in here.
 */
export function groupLayers(ops: OpRecord[]): number[] {
  return ops.map((_, i) => i);
}

/** Passes with labels, parents and children, in execution order. */
export function toPasses(raw: RawRun, layerOf: number[], saved: (op: OpRecord) => boolean): Pass[] {
  const { ops } = raw;
  const labels = labelOps(ops, layerOf);
  const labelById = new Map<number, string>();
  ops.forEach((op, i) => labelById.set(op.id, labels.label[i]));
  const paramNumel = new Map<string, number>();
  for (const m of raw.model.modules) {
    for (const p of m.params) paramNumel.set(m.address ? `${m.address}.${p.name}` : p.name, p.numel);
  }
  const passes: Pass[] = ops.map((op, i) => {
    const label = labels.label[i];
    const isSaved = saved(op);
    const parents: string[] = [];
    const parentArgs: string[] = [];
    for (const [pid, pos] of op.parents) {
      const parent = labelById.get(pid);
      if (parent === undefined) throw new Error(`pass ${op.id} names parent ${pid}, which the agent never sent`);
      parents.push(parent);
      parentArgs.push(pos);
    }
    const pass: Pass = {
      label,
      layer: labels.layer[i],
      pass: labels.pass[i],
      num_passes: labels.numPasses[i],
      id: op.id,
      kind: op.kind,
      func: op.func,
      qualname: op.qualname,
      call: op.call,
      out_index: op.out_index,
      module: innermost(op),
      modules: op.modules.filter(([address]) => address !== "").map(([address, call]) => `${address}:${call}`),
      parents,
      parent_args: parentArgs,
      children: [],
      args: op.args,
      shape: op.shape,
      dtype: op.dtype,
      stored_dtype: op.stored_dtype,
      device: op.device,
      saved: isSaved,
      array: isSaved ? label : null,
      is_input: op.kind === "input",
      is_output: op.kind === "output",
      is_buffer: op.kind === "buffer",
      is_param: false,
      is_internal_source: op.kind === "internal" || op.kind === "constant",
      is_inplace: op.inplace,
      params: op.params,
      num_params: op.params.reduce((sum, p) => sum + (paramNumel.get(p) ?? 0), 0),
      nbytes: op.nbytes,
      time_ms: op.time_ms,
      distance_from_input: null,
      distance_to_output: null,
    };
    for (const key of ["input_path", "output_path", "address", "note"] as const) {
      if (op[key] !== undefined) pass[key] = op[key];
    }
    return pass;
  });
  const byLabel = new Map(passes.map((p) => [p.label, p]));
  for (const p of passes) {
    for (const parent of new Set(p.parents)) byLabel.get(parent)?.children.push(p.label);
  }
  return passes;
}

/** Fill distance_from_input and distance_to_output (edges counted; null when unreachable). */
export function addDistances(passes: Pass[]): void {
  const byLabel = new Map(passes.map((p) => [p.label, p]));
  const bfs = (starts: Pass[], next: (p: Pass) => string[], set: (p: Pass, d: number) => void) => {
    let frontier = starts;
    const seen = new Set(starts.map((p) => p.label));
    for (let d = 0; frontier.length; d++) {
      const upcoming: Pass[] = [];
      for (const p of frontier) {
        set(p, d);
        for (const l of next(p)) {
          if (!seen.has(l)) {
            seen.add(l);
            upcoming.push(byLabel.get(l) as Pass);
          }
        }
      }
      frontier = upcoming;
    }
  };
  bfs(passes.filter((p) => p.is_input), (p) => p.children, (p, d) => { p.distance_from_input = d; });
  bfs(passes.filter((p) => p.is_output), (p) => p.parents, (p, d) => { p.distance_to_output = d; });
}

export function toLayers(passes: Pass[]): Layer[] {
  const layers = new Map<string, Layer>();
  for (const p of passes) {
    let layer = layers.get(p.layer);
    if (!layer) {
      layer = { label: p.layer, func: p.func, passes: [], num_passes: p.num_passes, module: p.module, params: p.params };
      layers.set(p.layer, layer);
    }
    layer.passes.push(p.label);
  }
  return [...layers.values()];
}

export function toModules(raw: RawRun, passes: Pass[]): ModuleEntry[] {
  const labelById = new Map(passes.map((p) => [p.id, p.label]));
  const labels = (ids: number[]) => ids.map((id) => labelById.get(id)).filter((l): l is string => l !== undefined);
  const entries = new Map<string, ModuleEntry>();
  const parentOf = (address: string) => (address === "" ? null : address.includes(".") ? address.slice(0, address.lastIndexOf(".")) : "");
  for (const m of raw.model.modules) {
    entries.set(m.address, {
      address: m.address,
      class: m.class,
      parent: parentOf(m.address),
      children: [],
      params: m.params,
      num_params: m.params.reduce((s, p) => s + p.numel, 0),
      buffers: m.buffers.map((b) => b.name),
      calls: [],
    });
  }
  for (const c of raw.moduleCalls) {
    let entry = entries.get(c.address);
    if (!entry) {
      // a module built inside forward: not in the model's tree until it ran
      entry = { address: c.address, class: c.class, parent: parentOf(c.address), children: [], params: [], num_params: 0, buffers: [], calls: [] };
      entries.set(c.address, entry);
    }
    entry.calls.push({ call: c.call, label: `${c.address}:${c.call}`, inputs: labels(c.inputs), outputs: labels(c.outputs) });
  }
  for (const e of entries.values()) {
    if (e.parent !== null) {
      // the nearest existing ancestor (parents of dynamic modules may themselves be absent)
      let parent: string | null = e.parent;
      while (parent !== null && !entries.has(parent)) parent = parentOf(parent);
      e.parent = parent;
      if (parent !== null) entries.get(parent)?.children.push(e.address);
    }
  }
  return [...entries.values()];
}

function outputLabels(structure: OutputStructure, labelById: Map<number, string>): unknown {
  switch (structure.kind) {
    case "tensor":
      return { kind: "tensor", pass: labelById.get(structure.id) };
    case "tuple":
    case "list":
      return { kind: structure.kind, items: structure.items.map((s) => outputLabels(s, labelById)) };
    case "dict":
      return { kind: "dict", items: Object.fromEntries(Object.entries(structure.items).map(([k, s]) => [k, outputLabels(s, labelById)])) };
    default:
      return structure;
  }
}

/** The whole pipeline. `saved` says which ops had their bytes stored. */
export function buildLog(raw: RawRun, saved: (op: OpRecord) => boolean): RunLog {
  const passes = toPasses(raw, groupLayers(raw.ops), saved);
  addDistances(passes);
  const layers = toLayers(passes);
  const modules = toModules(raw, passes);
  const labelById = new Map(passes.map((p) => [p.id, p.label]));
  return {
    schema: LOG_SCHEMA,
    model: {
      class: raw.model.class,
      device: raw.model.device,
      seed: raw.model.seed,
      num_params: modules.reduce((s, m) => s + m.num_params, 0),
    },
    num_passes: passes.length,
    num_layers: layers.length,
    num_ops_dispatched: raw.numOps,
    inputs: passes.filter((p) => p.is_input).map((p) => p.label),
    outputs: passes.filter((p) => p.is_output).map((p) => p.label),
    output_structure: outputLabels(raw.outputs, labelById),
    passes,
    layers,
    modules,
  };
}

/** Address of the innermost module an op ran in; null at the model's top level. */
function innermost(op: OpRecord): string | null {
  const last = op.modules[op.modules.length - 1];
  return last && last[0] !== "" ? last[0] : null;
}
