/**
 * What a graph shows, decided from a RunLog alone: its nodes, edges and module clusters. Pure —
 * no Graphviz here (dot.ts turns a view into DOT, render.ts DOT into SVG) — so the rules below are
 * unit-tested on recorded agent streams.
 *
 * - unrolled: one node per pass; one cluster per module call (`addr:call`).
 * - rolled: one node per layer, showing its pass count; one cluster per module address. An edge
 *   carries the pass numbers it joins when they are not simply "every pass"; an edge into a node
 *   whose first pass came earlier (recurrence) is a back edge.
 * - depth N: modules nested deeper than N levels (the model itself is level 0) are each drawn as
 *   one node (per call when unrolled, per address when rolled) standing for everything inside.
 */
import type { ModuleEntry, ParamInfo, Pass, RunLog } from "../log/types.js";
import { formatBytes } from "../ui/progress.js";
import { formatShape } from "../ui/table.js";

export type GraphMode = "rolled" | "unrolled";

export interface ViewOptions {
  mode: GraphMode;
  /** Module levels drawn as clusters; deeper modules collapse into one node. null: all levels. */
  depth: number | null;
  /** Pass labels to highlight (a node is highlighted when any pass it stands for is). */
  highlight?: ReadonlySet<string> | null;
}

/** How a node looks (the legend in docs/graph.md). */
export type NodeKind = "input" | "output" | "param_op" | "op" | "buffer" | "internal" | "module";

export interface GraphNode {
  /** The DOT id: a pass label (unrolled), a layer label (rolled), or `module:addr[:call]`. */
  id: string;
  kind: NodeKind;
  /** Text lines, the first one bold-ish: the label. */
  lines: string[];
  /** Hover text in the SVG: everything the log says in short. */
  tooltip: string;
  /** The innermost cluster holding it, or null at the top level. */
  cluster: string | null;
  /** Every pass it stands for is a dead end (reaches no output). */
  dead: boolean;
  highlighted: boolean;
  /** The passes it stands for, in execution order. */
  passes: string[];
  /** Id of its first pass: nodes are listed in this order. */
  order: number;
}

export interface GraphEdge {
  tail: string;
  head: string;
  /** Which passes the edge joins, when that is not simply every pass; null otherwise. */
  label: string | null;
  /** Goes to a node whose first pass came earlier: recurrence, drawn as a loop-back edge. */
  back: boolean;
  /** The head is dead (muted). */
  dead: boolean;
}

export interface GraphCluster {
  /** DOT subgraph id: `cluster_` + module address (rolled) or call label (unrolled). */
  id: string;
  label: string;
  parent: string | null;
  /** Nesting level, 1 for modules directly inside the model. */
  level: number;
}

export interface GraphView {
  mode: GraphMode;
  /** The model's class and what is drawn, for the graph's caption. */
  title: string;
  nodes: GraphNode[];
  edges: GraphEdge[];
  /** Parents before children. */
  clusters: GraphCluster[];
}

/** `encoder.layers.0:2` → [`encoder.layers.0`, 2]. */
export function splitCall(label: string): [string, number] {
  const i = label.lastIndexOf(":");
  return [label.slice(0, i), Number(label.slice(i + 1))];
}

export function nodeKind(p: Pass): NodeKind {
  if (p.is_input) return "input";
  if (p.is_output) return "output";
  if (p.is_buffer) return "buffer";
  if (p.is_internal_source) return "internal";
  return p.params.length ? "param_op" : "op";
}

/** 1234 → "1.2k", 25557032 → "25.6M". */
export function formatCount(n: number): string {
  if (n < 1000) return String(n);
  const units = ["k", "M", "G", "T"];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)}${units[u]}`;
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Sizes are shown on a node from this many bytes (smaller ones only in the tooltip). */
export const SIZE_SHOWN_FROM = 1_000_000;

/** "1, 2, 3, 5" → "1–3, 5" */
export function passRanges(ns: number[]): string {
  const sorted = [...new Set(ns)].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && (sorted[j + 1] as number) === (sorted[j] as number) + 1) j++;
    out.push(i === j ? `${sorted[i]}` : `${sorted[i]}–${sorted[j]}`);
    i = j + 1;
  }
  return out.join(", ");
}

/**
 * The label of a rolled edge from its (tail pass, head pass) number pairs, or null when the edge
 * simply joins every pass: a one-pass layer feeding every pass of the head, every pass of the
 * tail feeding a one-pass head, or pass i feeding pass i throughout.
 */
export function edgeLabel(pairs: [number, number][], tailPasses: number, headPasses: number) {
  const tails = new Set(pairs.map(([t]) => t));
  const heads = new Set(pairs.map(([, h]) => h));
  if (tailPasses === 1 && headPasses === 1) return null;
  if (tailPasses === 1) return heads.size === headPasses ? null : `in ${passRanges([...heads])}`;
  if (headPasses === 1) return tails.size === tailPasses ? null : `out ${passRanges([...tails])}`;
  const identity = pairs.every(([t, h]) => t === h);
  if (identity && tailPasses === headPasses && heads.size === headPasses) return null;
  const sorted = [...pairs].sort((a, b) => a[1] - b[1] || a[0] - b[0]);
  if (sorted.length <= 3) return sorted.map(([t, h]) => `${t}→${h}`).join(", ");
  const shift = (sorted[0] as [number, number])[1] - (sorted[0] as [number, number])[0];
  const oneToOne = tails.size === sorted.length && heads.size === sorted.length;
  if (oneToOne && sorted.every(([t, h]) => h - t === shift))
    return `${passRanges([...tails])} → ${passRanges([...heads])}`;
  return `out ${passRanges([...tails])}, in ${passRanges([...heads])}`;
}

/** What the log knows about modules and parameters, indexed for the builder. */
class ModuleIndex {
  readonly byAddress: Map<string, ModuleEntry>;
  readonly params = new Map<string, ParamInfo>();
  private readonly totals = new Map<string, number>();

  constructor(log: RunLog) {
    this.byAddress = new Map(log.modules.map((m) => [m.address, m]));
    for (const m of log.modules)
      for (const p of m.params) this.params.set(m.address ? `${m.address}.${p.name}` : p.name, p);
  }

  className(address: string): string {
    return this.byAddress.get(address)?.class ?? "?";
  }

  numCalls(address: string): number {
    return this.byAddress.get(address)?.num_calls ?? 1;
  }

  /** Parameters of a module and everything nested in it. */
  totalParams(address: string, seen = new Set<string>()): number {
    const cached = this.totals.get(address);
    if (cached !== undefined) return cached;
    const m = this.byAddress.get(address);
    if (!m || seen.has(address)) return 0;
    seen.add(address);
    const total = m.children.reduce((a, c) => a + this.totalParams(c, seen), m.num_params);
    this.totals.set(address, total);
    return total;
  }

  paramShape(address: string): string {
    const p = this.params.get(address);
    return p ? formatShape(p.shape) : "?";
  }
}

function mostCommon(values: string[]): string | null {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best: string | null = null;
  for (const [v, n] of counts) if (best === null || n > (counts.get(best) as number)) best = v;
  return best;
}

/** Graphviz reads `\` in labels as an escape (`\N`, `\l`); shown text keeps it literal. */
function literal(s: string): string {
  return s.replace(/\\/g, "\\\\");
}

/** The lines of a node standing for one pass or for the passes of one layer. */
function passLines(title: string, passes: Pass[], modules: ModuleIndex, usualDtype: string | null) {
  const p = passes[0] as Pass;
  const what =
    (p.is_input && p.input_path) ||
    (p.is_output && p.output_path) ||
    (p.is_buffer && p.address) ||
    p.func;
  const shapes = [...new Set(passes.map((x) => formatShape(x.shape)))];
  const facts = [what, shapes.length <= 2 ? shapes.join(" | ") : `${shapes.length} shapes`];
  const dtypes = [...new Set(passes.map((x) => x.dtype))];
  if (dtypes.length > 1 || dtypes[0] !== usualDtype) facts.push(dtypes.join(" | "));
  const nbytes = Math.max(...passes.map((x) => x.nbytes));
  if (nbytes >= SIZE_SHOWN_FROM) facts.push(formatBytes(nbytes));
  const lines = [title, facts.join(" · ")];
  if (p.params.length)
    lines.push(`params ${p.params.map((a) => modules.paramShape(a)).join(", ")}`);
  return lines.map(literal);
}

function passTooltip(passes: Pass[], modules: ModuleIndex): string {
  const p = passes[0] as Pass;
  const lines = [
    passes.length > 1 ? `${p.layer}: ${passes.length} passes` : p.label,
    p.qualname ?? p.func,
  ];
  if (p.module !== null) lines.push(`module ${p.module} (${modules.className(p.module)})`);
  lines.push(
    `${formatShape(p.shape)} ${p.dtype} ${formatBytes(p.nbytes)}${p.device !== "cpu" ? ` on ${p.device}` : ""}`,
  );
  for (const a of p.params) lines.push(`${a} ${modules.paramShape(a)}`);
  const ms = passes.reduce((s, x) => s + x.time_ms, 0);
  if (ms > 0) lines.push(`${ms.toFixed(3)} ms`);
  if (passes.every((x) => x.is_dead_end)) lines.push("dead end: reaches no output");
  return literal(lines.join("\n"));
}

/** Builds the view of a run's graph. */
export function buildView(log: RunLog, options: ViewOptions): GraphView {
  const { mode, depth } = options;
  const rolled = mode === "rolled";
  const highlight = options.highlight ?? null;
  const modules = new ModuleIndex(log);
  const byLabel = new Map(log.passes.map((p) => [p.label, p]));
  const usualDtype = mostCommon(log.passes.filter((p) => p.kind === "op").map((p) => p.dtype));

  // The module stack a pass is drawn in: calls (unrolled) or addresses (rolled), cut at depth.
  const frameOf = (call: string) => (rolled ? splitCall(call)[0] : call);
  const collapsedAt = (p: Pass): string | null =>
    depth !== null && p.modules.length > depth ? (p.modules[depth] as string) : null;

  // Clusters, created on first sight; a cluster's parent is where it was first seen.
  const clusters = new Map<string, GraphCluster>();
  const clusterFor = (stack: string[]): string | null => {
    let parent: string | null = null;
    for (const [i, call] of stack.entries()) {
      const frame = frameOf(call);
      const id = `cluster_${frame}`;
      if (!clusters.has(id)) {
        const [address, n] = splitCall(call);
        const calls = modules.numCalls(address);
        const name = rolled || calls === 1 ? address : `${address}:${n}`;
        const extra = rolled && calls > 1 ? ` · ${calls} calls` : "";
        clusters.set(id, {
          id,
          label: literal(`${name} · ${modules.className(address)}${extra}`),
          parent,
          level: i + 1,
        });
      }
      parent = id;
    }
    return parent;
  };

  // Which node each pass is drawn as.
  const nodes = new Map<string, GraphNode>();
  const repOf = new Map<string, string>();
  const groups = new Map<string, Pass[]>();
  for (const p of log.passes) {
    const collapsed = collapsedAt(p);
    const id = collapsed !== null ? `module:${frameOf(collapsed)}` : rolled ? p.layer : p.label;
    repOf.set(p.label, id);
    const group = groups.get(id);
    if (group) group.push(p);
    else groups.set(id, [p]);
  }
  for (const [id, passes] of groups) {
    const first = passes[0] as Pass;
    const collapsed = collapsedAt(first);
    const stack = first.modules.slice(0, depth ?? first.modules.length);
    let node: GraphNode;
    if (collapsed !== null) {
      const [address, n] = splitCall(collapsed);
      const calls = rolled ? modules.numCalls(address) : 1;
      const name = rolled || modules.numCalls(address) === 1 ? address : `${address}:${n}`;
      const params = modules.totalParams(address);
      const summary = [
        calls > 1 ? `${calls} calls` : null,
        plural(passes.length, "pass", "passes"),
        params > 0 ? `${formatCount(params)} params` : null,
      ];
      const entry = modules.byAddress.get(address);
      const outs = entry?.calls
        .filter((c) => rolled || c.label === collapsed)
        .flatMap((c) => c.outputs)
        .map((l) => byLabel.get(l))
        .filter((x): x is Pass => x !== undefined);
      const shapes = [...new Set((outs ?? []).map((x) => formatShape(x.shape)))];
      const lines = [name, modules.className(address), summary.filter(Boolean).join(" · ")];
      if (shapes.length) lines.push(`out ${shapes.length <= 2 ? shapes.join(" | ") : "varies"}`);
      node = {
        id,
        kind: "module",
        lines: lines.map(literal),
        tooltip: literal(
          `${name} (${modules.className(address)}): ${plural(passes.length, "pass", "passes")} inside, ${plural(params, "parameter", "parameters")}`,
        ),
        cluster: clusterFor(stack),
        dead: passes.every((x) => x.is_dead_end),
        highlighted: false,
        passes: passes.map((x) => x.label),
        order: first.id,
      };
    } else {
      const title = rolled && passes.length > 1 ? `${first.layer} ×${passes.length}` : id;
      node = {
        id,
        kind: nodeKind(first),
        lines: passLines(title, passes, modules, usualDtype),
        tooltip: passTooltip(passes, modules),
        cluster: clusterFor(stack),
        dead: passes.every((x) => x.is_dead_end),
        highlighted: false,
        passes: passes.map((x) => x.label),
        order: first.id,
      };
    }
    if (highlight) node.highlighted = passes.some((x) => highlight.has(x.label));
    nodes.set(id, node);
  }

  // Edges: one per (tail node, head node), with the pass pairs they carry.
  const edges = new Map<string, { tail: string; head: string; pairs: [number, number][] }>();
  for (const child of log.passes) {
    const head = repOf.get(child.label) as string;
    for (const parentLabel of new Set(child.parents)) {
      const parent = byLabel.get(parentLabel);
      if (!parent) continue;
      const tail = repOf.get(parent.label) as string;
      // inside one collapsed module call: not drawn
      if (tail === head && head.startsWith("module:")) {
        const a = collapsedAt(parent);
        if (!rolled || a === collapsedAt(child)) continue;
      }
      const key = `${tail}\u0000${head}`;
      const e = edges.get(key);
      if (e) e.pairs.push([parent.pass, child.pass]);
      else edges.set(key, { tail, head, pairs: [[parent.pass, child.pass]] });
    }
  }

  const nodeList = [...nodes.values()].sort((a, b) => a.order - b.order);
  const component = strongComponents(
    nodeList.map((n) => n.id),
    [...edges.values()],
  );
  const edgeList: GraphEdge[] = [...edges.values()].map(({ tail, head, pairs }) => {
    const t = nodes.get(tail) as GraphNode;
    const h = nodes.get(head) as GraphNode;
    const layers = rolled && t.kind !== "module" && h.kind !== "module";
    return {
      tail,
      head,
      label: layers ? edgeLabel(pairs, t.passes.length, h.passes.length) : null,
      // closes a cycle (head reaches tail) and points back in execution order
      back: component.get(tail) === component.get(head) && h.order <= t.order,
      dead: h.dead,
    };
  });

  const folded = depth !== null ? ` · modules deeper than ${depth} folded` : "";
  return {
    mode,
    title: literal(`${log.model.class} · ${mode} · ${nodeList.length} nodes${folded}`),
    nodes: nodeList,
    edges: edgeList,
    clusters: orderClusters([...clusters.values()]),
  };
}

/**
 * Strongly connected components (Tarjan's algorithm, iterative so that deep graphs cannot
 * overflow the stack): node id → component number. Two nodes share a component exactly when
 * each reaches the other, so an edge inside one closes a cycle.
 */
export function strongComponents(
  ids: string[],
  edges: { tail: string; head: string }[],
): Map<string, number> {
  const out = new Map<string, string[]>();
  for (const id of ids) out.set(id, []);
  for (const e of edges) out.get(e.tail)?.push(e.head);
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const component = new Map<string, number>();
  let next = 0;
  let components = 0;
  for (const root of ids) {
    if (index.has(root)) continue;
    const work: [string, number][] = [[root, 0]];
    index.set(root, next);
    low.set(root, next++);
    stack.push(root);
    onStack.add(root);
    while (work.length) {
      const frame = work[work.length - 1] as [string, number];
      const [v, i] = frame;
      const succ = out.get(v) as string[];
      if (i < succ.length) {
        frame[1]++;
        const w = succ[i] as string;
        if (!index.has(w)) {
          index.set(w, next);
          low.set(w, next++);
          stack.push(w);
          onStack.add(w);
          work.push([w, 0]);
        } else if (onStack.has(w)) {
          low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
        }
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent) low.set(parent[0], Math.min(low.get(parent[0]) as number, low.get(v) as number));
      if (low.get(v) === index.get(v)) {
        for (;;) {
          const w = stack.pop() as string;
          onStack.delete(w);
          component.set(w, components);
          if (w === v) break;
        }
        components++;
      }
    }
  }
  return component;
}

/** Parents before children, otherwise in order of first sight. */
function orderClusters(list: GraphCluster[]): GraphCluster[] {
  return [...list].sort((a, b) => a.level - b.level);
}
