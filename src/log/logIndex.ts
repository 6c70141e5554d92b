/**
 * The lookups every reader of a log needs, built once from a RunLog: passes by label, the passes
 * of a layer, the module tree (parent, children, depth) with each module's parameters (its own
 * and nested ones, counted in one place), parameters by address, and the one spelling of a
 * module call (`encoder.layers.0:2`). `ls`, `show`, `profile` and the graph read the log through
 * it; nothing here changes the log.
 */
import { dtypeBytes } from "./dtypes.js";
import type { Layer, ModuleEntry, ParamInfo, Pass, RunLog } from "./types.js";

/** One call of a module: `{ address: "encoder.layers.0", call: 2 }` is `encoder.layers.0:2`. */
export interface CallRef {
  address: string;
  /** 1-based. */
  call: number;
}

/** A call's label, as `Pass.modules` and `ModuleCall.label` hold it: `address:call`. */
export function formatCall(ref: CallRef): string {
  return `${ref.address}:${ref.call}`;
}

/** The call a label names; null unless it reads `address:call` with a whole-number call. */
export function parseCall(label: string): CallRef | null {
  const i = label.lastIndexOf(":");
  if (i < 0 || !/^\d+$/.test(label.slice(i + 1))) return null;
  return { address: label.slice(0, i), call: Number(label.slice(i + 1)) };
}

/** A parameter's full address: `features.0` and `weight` → `features.0.weight`. */
export function paramAddress(module: string, name: string): string {
  return module ? `${module}.${name}` : name;
}

/** How many parameter elements, and their bytes. */
export interface ParamTotals {
  num_params: number;
  param_bytes: number;
}

export interface ModuleNode {
  entry: ModuleEntry;
  /** 0 for the model and for any module whose parent is not in the log. */
  depth: number;
  parent: ModuleNode | null;
  children: ModuleNode[];
  /** The module's own parameters. */
  own: ParamTotals;
  /** Its own and those of every module nested in it. */
  nested: ParamTotals;
}

const none = (): ParamTotals => ({ num_params: 0, param_bytes: 0 });

function addTo(total: ParamTotals, more: ParamTotals): void {
  total.num_params += more.num_params;
  total.param_bytes += more.param_bytes;
}

function paramBytes(p: ParamInfo): number {
  return p.numel * (dtypeBytes(p.dtype) ?? 0);
}

/** A read-only index over one log. */
export class LogIndex {
  private readonly passes: Map<string, Pass>;
  private readonly layers: Map<string, Layer>;
  private readonly nodes = new Map<string, ModuleNode>();
  private readonly tree: ModuleNode[] = [];
  /** Every parameter of the model by its full address. */
  readonly params = new Map<string, ParamInfo>();

  constructor(readonly log: RunLog) {
    this.passes = new Map(log.passes.map((p) => [p.label, p]));
    this.layers = new Map(log.layers.map((l) => [l.label, l]));
    for (const m of log.modules)
      for (const p of m.params) this.params.set(paramAddress(m.address, p.name), p);
    this.buildTree();
  }

  pass(label: string): Pass | undefined {
    return this.passes.get(label);
  }

  layer(label: string): Layer | undefined {
    return this.layers.get(label);
  }

  /** The passes of a layer, in execution order. */
  passesOf(layer: Layer): Pass[] {
    return layer.passes.map((l) => this.passes.get(l)).filter((p): p is Pass => p !== undefined);
  }

  /** For each of `pass.children`, the argument position(s) `pass` takes in it ("0", "0,1"). */
  childArgs(pass: Pass): string[] {
    return pass.children.map((c) => {
      const child = this.passes.get(c);
      if (!child) return "";
      return child.parents
        .map((parent, i) => (parent === pass.label ? child.parent_args[i] : undefined))
        .filter((a): a is string => a !== undefined)
        .join(",");
    });
  }

  module(address: string): ModuleEntry | undefined {
    return this.nodes.get(address)?.entry;
  }

  /** A module with its place in the tree and its parameter totals. */
  node(address: string): ModuleNode | undefined {
    return this.nodes.get(address);
  }

  /** Every module depth first from the model down, children in the log's order. */
  moduleTree(): readonly ModuleNode[] {
    return this.tree;
  }

  /** Elements and bytes of these parameters (full addresses), each counted once. */
  paramTotals(addresses: Iterable<string>): ParamTotals {
    const total = none();
    for (const a of new Set(addresses)) {
      const p = this.params.get(a);
      if (p) addTo(total, { num_params: p.numel, param_bytes: paramBytes(p) });
    }
    return total;
  }

  private buildTree(): void {
    const byAddress = new Map(this.log.modules.map((m) => [m.address, m]));
    const visit = (m: ModuleEntry, parent: ModuleNode | null): ModuleNode => {
      const own = this.paramTotals(m.params.map((p) => paramAddress(m.address, p.name)));
      const node: ModuleNode = {
        entry: m,
        depth: parent ? parent.depth + 1 : 0,
        parent,
        children: [],
        own,
        nested: { ...own },
      };
      this.nodes.set(m.address, node);
      this.tree.push(node);
      for (const c of m.children) {
        const child = byAddress.get(c);
        if (!child || this.nodes.has(c)) continue;
        const n = visit(child, node);
        node.children.push(n);
        addTo(node.nested, n.nested);
      }
      return node;
    };
    const roots = this.log.modules.filter((m) => m.parent === null || !byAddress.has(m.parent));
    // Then any entry no parent reached (should not happen): listed rather than lost.
    for (const m of [...roots, ...this.log.modules]) if (!this.nodes.has(m.address)) visit(m, null);
  }
}
