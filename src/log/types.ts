/**
 * The data model of a run, defined once. Raw records come from the agent (docs/wire.md); the
 * pipeline in build.ts turns them into passes, layers and modules — the layer log that log.json
 * holds (docs/run-directory.md). Vocabulary: an *op* is one recorded call, a *pass* one op output in the
 * log, a *layer* groups the passes of the same op run several times, a *module* is an nn.Module
 * (its *calls* numbered from 1), a *run* is an output directory.
 */

/** One `op` record as the agent sends it. */
export interface OpRecord {
  id: number;
  kind: "op" | "input" | "buffer" | "constant" | "internal" | "output";
  func: string;
  /** The function's name in labels and selectors (`__add__` → `add`), from the agent. */
  name: string;
  qualname: string | null;
  call: number | null;
  out_index: string | null;
  /** [parent pass id, argument position] */
  parents: [number, string][];
  args: Record<string, unknown>;
  params: string[];
  /** [module address, call index], outermost first */
  modules: [string, number][];
  shape: number[];
  dtype: string;
  device: string;
  stored_dtype: string | null;
  inplace: boolean;
  time_ms: number;
  /** bytes that follow in data frames (0 when not saved); the log's nbytes is the tensor's own size */
  stored_nbytes: number;
  /** with a direct file (docs/wire.md): the offset in activations.npz where the bytes start */
  at?: number;
  /** the agent wrote the bytes into activations.npz itself; no data frames follow */
  direct?: boolean;
  input_path?: string;
  output_path?: string;
  address?: string;
  note?: string;
}

/** One module call as the agent reports it when the call returns. */
export interface ModuleCallRecord {
  address: string;
  call: number;
  class: string;
  /** The enclosing module call, or null for the model itself. */
  parent: [string, number] | null;
  inputs: number[];
  outputs: number[];
}

export interface ParamInfo {
  name: string;
  shape: number[];
  dtype: string;
  numel: number;
}

export interface ModuleRecord {
  address: string;
  class: string;
  params: ParamInfo[];
  buffers: { name: string; shape: number[]; dtype: string }[];
  training: boolean;
}

export interface ModelRecord {
  class: string;
  modules: ModuleRecord[];
  device: string;
  seed: number;
  /** Parameters of the model, tied or shared ones counted once. */
  num_params: number;
}

export type OutputStructure =
  | { kind: "tensor"; id: number }
  | { kind: "tuple" | "list"; items: OutputStructure[] }
  | { kind: "dict"; items: Record<string, OutputStructure> }
  | { kind: "value"; repr: unknown };

/** Everything the agent said about one forward pass. */
export interface RawRun {
  model: ModelRecord;
  ops: OpRecord[];
  moduleCalls: ModuleCallRecord[];
  outputs: OutputStructure;
  numOps: number;
  torchCalls: number;
  forwardMs: number;
  /** After the forward pass, how long the agent waited for its last bytes to be written. */
  drainMs?: number;
  /** The agent's CPU time (all its threads) from the forward pass's start to its last byte written. */
  cpuMs?: number;
  /** With --grads: the backward pass's wall time and the target's value (null when not finite). */
  backwardMs?: number;
  targetValue?: number | null;
}

/** One pass in log.json. */
export interface Pass {
  label: string;
  layer: string;
  pass: number;
  num_passes: number;
  id: number;
  kind: OpRecord["kind"];
  func: string;
  qualname: string | null;
  call: number | null;
  out_index: string | null;
  module: string | null;
  modules: string[];
  parents: string[];
  parent_args: string[];
  children: string[];
  args: Record<string, unknown>;
  shape: number[];
  dtype: string;
  stored_dtype: string | null;
  device: string;
  saved: boolean;
  array: string | null;
  is_input: boolean;
  is_output: boolean;
  is_buffer: boolean;
  is_param: boolean;
  is_internal_source: boolean;
  is_inplace: boolean;
  params: string[];
  num_params: number;
  nbytes: number;
  time_ms: number;
  distance_from_input: number | null;
  distance_to_output: number | null;
  /** Computed but never reaching an output. */
  is_dead_end: boolean;
  /** More than one child takes this pass. */
  is_branch_point: boolean;
  input_path?: string;
  output_path?: string;
  address?: string;
  note?: string;
  /**
   * The gradient of the run's target with respect to this pass (docs/gradients.md): null when not
   * recorded (no --grads, or --layers did not select the pass), `{status: "none"}` when the target
   * does not depend on it. Absent in torchlens.log/1 logs (read as null).
   */
  grad?: PassGrad | null;
}

export type PassGrad =
  | { status: "none" }
  | {
      status: "saved";
      /** Its key in gradients.npz (the pass's label). */
      array: string;
      shape: number[];
      dtype: string;
      stored_dtype: string;
      /** L2 norm; null when not finite. */
      norm: number | null;
    };

/** What the gradient target was (docs/gradients.md). */
export type GradTarget =
  | { kind: "sum" }
  | { kind: "index"; output: string; index: number[] }
  | { kind: "loss"; function: string };

export interface ParamGrad {
  address: string;
  /** Its key in gradients.npz: `param:{address}`. */
  array: string;
  shape: number[];
  dtype: string;
  norm: number | null;
}

/** log.json's `gradients`: present (non-null) in runs made with --grads. */
export interface Gradients {
  file: string;
  target: GradTarget;
  /** The target's value; null when not finite. */
  value: number | null;
  num_saved: number;
  params: ParamGrad[];
  backward_ms: number;
}

export interface Layer {
  label: string;
  func: string;
  passes: string[];
  num_passes: number;
  module: string | null;
  params: string[];
}

export interface ModuleCall {
  call: number;
  /** `address:call`, e.g. `encoder.layers.0:2` */
  label: string;
  /** The enclosing module call's label, or null at the top. */
  parent: string | null;
  inputs: string[];
  outputs: string[];
  /** Passes recorded inside this call (nested modules included), their time and bytes. */
  num_passes: number;
  time_ms: number;
  nbytes: number;
}

export interface ModuleEntry {
  address: string;
  class: string;
  parent: string | null;
  children: string[];
  params: ParamInfo[];
  num_params: number;
  buffers: string[];
  calls: ModuleCall[];
  /** Totals over all calls. */
  num_calls: number;
  num_passes: number;
  time_ms: number;
  nbytes: number;
}

export interface RunLog {
  schema: string;
  model: { class: string; device: string; seed: number; num_params: number };
  num_passes: number;
  num_layers: number;
  num_ops_dispatched: number;
  inputs: string[];
  outputs: string[];
  /** Every edge once: [parent label, child label, argument position in the child]. */
  edges: [string, string, string][];
  output_structure: unknown;
  passes: Pass[];
  layers: Layer[];
  modules: ModuleEntry[];
  /** null without --grads (docs/gradients.md); absent in torchlens.log/1 logs (read as null). */
  gradients?: Gradients | null;
}

export const LOG_SCHEMA = "torchlens.log/2";

/** The schemas this torchlens reads: /2 is /1 with `gradients` and each pass's `grad` added. */
export const READ_SCHEMAS: readonly string[] = ["torchlens.log/1", LOG_SCHEMA];
