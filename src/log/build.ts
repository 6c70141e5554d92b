/**
 * records → passes → layers → modules: the pipeline that turns what the agent said (RawRun) into
 * the layer log (RunLog). Each step is a pure function.
 */
import { tensorBytes } from "./dtypes.js";
import { labelOps } from "./labels.js";
import { formatCall, paramAddress } from "./logIndex.js";
import { groupLayers } from "./loops.js";
import {
  type Layer,
  LOG_SCHEMA,
  type ModuleEntry,
  type OpRecord,
  type OutputStructure,
  type Pass,
  type RawRun,
  type RunLog,
} from "./types.js";

/** Passes with labels, parents and children, in execution order. */
export function toPasses(raw: RawRun, layerOf: number[], saved: (op: OpRecord) => boolean): Pass[] {
  const { ops } = raw;
  const labels = labelOps(ops, layerOf);
  const labelById = new Map<number, string>(ops.map((op, i) => [op.id, labels.label[i]]));
  const paramNumel = new Map<string, number>();
  for (const m of raw.model.modules) {
    for (const p of m.params) paramNumel.set(paramAddress(m.address, p.name), p.numel);
  }
  const passes: Pass[] = ops.map((op, i) => {
    const label = labels.label[i];
    const isSaved = saved(op);
    const parents: string[] = [];
    const parentArgs: string[] = [];
    for (const [pid, pos] of op.parents) {
      const parent = labelById.get(pid);
      if (parent === undefined)
        throw new Error(`pass ${op.id} names parent ${pid}, which the agent never sent`);
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
      modules: op.modules
        .filter(([address]) => address !== "")
        .map(([address, call]) => formatCall({ address, call })),
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
      nbytes: tensorBytes(op.shape, op.dtype),
      time_ms: op.time_ms,
      distance_from_input: null,
      distance_to_output: null,
      is_dead_end: false,
      is_branch_point: false,
    };
    for (const key of ["input_path", "output_path", "address", "note"] as const) {
      if (op[key] !== undefined) pass[key] = op[key];
    }
    pass.grad = null; // filled in by attachGradients for a run with --grads
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
  bfs(
    passes.filter((p) => p.is_input),
    (p) => p.children,
    (p, d) => {
      p.distance_from_input = d;
    },
  );
  bfs(
    passes.filter((p) => p.is_output),
    (p) => p.parents,
    (p, d) => {
      p.distance_to_output = d;
    },
  );
  for (const p of passes) {
    p.is_dead_end = p.distance_to_output === null;
    p.is_branch_point = p.children.length > 1;
  }
}

export function toLayers(passes: Pass[]): Layer[] {
  const layers = new Map<string, Layer>();
  for (const p of passes) {
    let layer = layers.get(p.layer);
    if (!layer) {
      layer = {
        label: p.layer,
        func: p.func,
        passes: [],
        num_passes: p.num_passes,
        module: p.module,
        params: p.params,
      };
      layers.set(p.layer, layer);
    }
    layer.passes.push(p.label);
  }
  return [...layers.values()];
}

export function toModules(raw: RawRun, passes: Pass[]): ModuleEntry[] {
  const labelById = new Map(passes.map((p) => [p.id, p.label]));
  const labels = (ids: number[]) =>
    ids.map((id) => labelById.get(id)).filter((l): l is string => l !== undefined);
  const parentOf = (address: string) =>
    address === "" ? null : address.includes(".") ? address.slice(0, address.lastIndexOf(".")) : "";
  const blank = (address: string, cls: string): ModuleEntry => ({
    address,
    class: cls,
    parent: parentOf(address),
    children: [],
    params: [],
    num_params: 0,
    buffers: [],
    calls: [],
    num_calls: 0,
    num_passes: 0,
    time_ms: 0,
    nbytes: 0,
  });
  const entries = new Map<string, ModuleEntry>();
  for (const m of raw.model.modules) {
    const e = blank(m.address, m.class);
    e.params = m.params;
    e.num_params = m.params.reduce((s, p) => s + p.numel, 0);
    e.buffers = m.buffers.map((b) => b.name);
    entries.set(m.address, e);
  }
  // what ran inside each call: every pass counts toward each module on its stack
  const inside = new Map<string, { passes: number; time: number; bytes: number }>();
  raw.ops.forEach((op) => {
    for (const [address, call] of op.modules) {
      const key = formatCall({ address, call });
      const acc = inside.get(key) ?? { passes: 0, time: 0, bytes: 0 };
      acc.passes += 1;
      acc.time += op.time_ms;
      acc.bytes += tensorBytes(op.shape, op.dtype);
      inside.set(key, acc);
    }
  });
  const calls = [...raw.moduleCalls].sort((a, b) =>
    a.address === b.address ? a.call - b.call : 0,
  );
  for (const c of calls) {
    let entry = entries.get(c.address);
    if (!entry) {
      entry = blank(c.address, c.class); // a module built inside forward: not in the model's tree until it ran
      entries.set(c.address, entry);
    }
    const label = formatCall(c);
    const acc = inside.get(label) ?? { passes: 0, time: 0, bytes: 0 };
    entry.calls.push({
      call: c.call,
      label,
      parent: c.parent ? formatCall({ address: c.parent[0], call: c.parent[1] }) : null,
      inputs: labels(c.inputs),
      outputs: labels(c.outputs),
      num_passes: acc.passes,
      time_ms: acc.time,
      nbytes: acc.bytes,
    });
  }
  for (const e of entries.values()) {
    e.calls.sort((a, b) => a.call - b.call);
    e.num_calls = e.calls.length;
    for (const c of e.calls) {
      e.num_passes += c.num_passes;
      e.time_ms += c.time_ms;
      e.nbytes += c.nbytes;
    }
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
      return {
        kind: structure.kind,
        items: structure.items.map((s) => outputLabels(s, labelById)),
      };
    case "dict":
      return {
        kind: "dict",
        items: Object.fromEntries(
          Object.entries(structure.items).map(([k, s]) => [k, outputLabels(s, labelById)]),
        ),
      };
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
      num_params: raw.model.num_params ?? modules.reduce((s, m) => s + m.num_params, 0),
    },
    num_passes: passes.length,
    num_layers: layers.length,
    num_ops_dispatched: raw.numOps,
    inputs: passes.filter((p) => p.is_input).map((p) => p.label),
    outputs: passes.filter((p) => p.is_output).map((p) => p.label),
    edges: passes.flatMap((p) =>
      p.parents.map((parent, i): [string, string, string] => [parent, p.label, p.parent_args[i]]),
    ),
    output_structure: outputLabels(raw.outputs, labelById),
    passes,
    layers,
    modules,
    gradients: null,
  };
}

/** Address of the innermost module an op ran in; null at the model's top level. */
function innermost(op: OpRecord): string | null {
  const last = op.modules[op.modules.length - 1];
  return last && last[0] !== "" ? last[0] : null;
}
