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
 * - color grad-norm (a run made with --grads): each node carries the largest finite gradient norm
 *   of the passes it stands for, and the view the scale over them; dot.ts shades by it.
 */
import { type CallRef, formatCall, LogIndex, parseCall } from "../log/logIndex.js";
import type { Pass, RunLog } from "../log/types.js";
import { formatBytes, formatCount, formatMs, formatShape, formatStat } from "../ui/format.js";
import { plural } from "../util/text.js";
import { gradPresence, maxGradNorm, type NormScale, normScale } from "./shade.js";

export type GraphMode = "rolled" | "unrolled";

/** What `--color` shades nodes by. */
export const COLOR_BY = ["grad-norm"] as const;
export type ColorBy = (typeof COLOR_BY)[number];

export interface ViewOptions {
  mode: GraphMode;
  /** Module levels drawn as clusters; deeper modules collapse into one node. null: all levels. */
  depth: number | null;
  /** Pass labels to highlight (a node is highlighted when any pass it stands for is). */
  highlight?: ReadonlySet<string> | null;
  /** Shade nodes by this; null or absent: the kinds' own fills. */
  color?: ColorBy | null;
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
  /**
   * With color grad-norm only: the largest finite gradient norm of the passes it stands for;
   * null when none has one (not recorded, or the target does not depend on them).
   */
  gradNorm?: number | null;
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
  /** With color grad-norm only: what the shades mean (dot.ts draws it as the legend). */
  shading?: GradShading;
}

/** The scale of a grad-norm coloring, for the fills and the legend. */
export interface GradShading {
  by: ColorBy;
  /** Over the nodes' positive finite norms; null when no node has one (every node unshaded). */
  scale: NormScale | null;
  /** Nodes drawn without shade: no pass they stand for has a finite gradient norm. */
  unshaded: number;
}

export function nodeKind(p: Pass): NodeKind {
  if (p.is_input) return "input";
  if (p.is_output) return "output";
  if (p.is_buffer) return "buffer";
  if (p.is_internal_source) return "internal";
  return p.params.length ? "param_op" : "op";
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

/** A call label of `Pass.modules` as a reference (the log writes only well-formed ones). */
function callOf(label: string): CallRef {
  return parseCall(label) ?? { address: label, call: Number.NaN };
}

function className(index: LogIndex, address: string): string {
  return index.module(address)?.class ?? "?";
}

function numCalls(index: LogIndex, address: string): number {
  return index.module(address)?.num_calls ?? 1;
}

function paramShape(index: LogIndex, address: string): string {
  const p = index.params.get(address);
  return p ? formatShape(p.shape) : "?";
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

/** What the steps of one build share. */
interface Builder {
  index: LogIndex;
  rolled: boolean;
  depth: number | null;
  /** The dtype most ops have: a node shows its dtype only when it differs. */
  usualDtype: string | null;
  clusters: Map<string, GraphCluster>;
}

/** A cluster or folded-module id part: the call label (unrolled) or its module address (rolled). */
function frameOf(b: Builder, call: string): string {
  return b.rolled ? callOf(call).address : call;
}

/** The module call a pass is folded into at the builder's depth; null when it is drawn itself. */
function collapsedAt(b: Builder, p: Pass): string | null {
  return b.depth !== null && p.modules.length > b.depth ? (p.modules[b.depth] as string) : null;
}

/** How a module call is named on the graph: with its call number only when it matters. */
function callName(b: Builder, call: CallRef): string {
  return b.rolled || numCalls(b.index, call.address) === 1 ? call.address : formatCall(call);
}

/**
 * The innermost cluster of a module stack (call labels, outermost first), creating the clusters
 * on first sight; a cluster's parent is where it was first seen.
 */
function clusterFor(b: Builder, stack: string[]): string | null {
  let parent: string | null = null;
  for (const [i, label] of stack.entries()) {
    const id = `cluster_${frameOf(b, label)}`;
    if (!b.clusters.has(id)) {
      const call = callOf(label);
      const calls = numCalls(b.index, call.address);
      const extra = b.rolled && calls > 1 ? ` · ${calls} calls` : "";
      b.clusters.set(id, {
        id,
        label: literal(`${callName(b, call)} · ${className(b.index, call.address)}${extra}`),
        parent,
        level: i + 1,
      });
    }
    parent = id;
  }
  return parent;
}

/** The lines of a node standing for one pass or for the passes of one layer. */
function passLines(b: Builder, title: string, passes: Pass[]) {
  const p = passes[0] as Pass;
  const what =
    (p.is_input && p.input_path) ||
    (p.is_output && p.output_path) ||
    (p.is_buffer && p.address) ||
    p.func;
  const shapes = [...new Set(passes.map((x) => formatShape(x.shape)))];
  const facts = [what, shapes.length <= 2 ? shapes.join(" | ") : `${shapes.length} shapes`];
  const dtypes = [...new Set(passes.map((x) => x.dtype))];
  if (dtypes.length > 1 || dtypes[0] !== b.usualDtype) facts.push(dtypes.join(" | "));
  const nbytes = Math.max(...passes.map((x) => x.nbytes));
  if (nbytes >= SIZE_SHOWN_FROM) facts.push(formatBytes(nbytes));
  const lines = [title, facts.join(" · ")];
  if (p.params.length)
    lines.push(`params ${p.params.map((a) => paramShape(b.index, a)).join(", ")}`);
  return lines.map(literal);
}

function passTooltip(b: Builder, passes: Pass[]): string {
  const p = passes[0] as Pass;
  const lines = [
    passes.length > 1 ? `${p.layer}: ${passes.length} passes` : p.label,
    p.qualname ?? p.func,
  ];
  if (p.module !== null) lines.push(`module ${p.module} (${className(b.index, p.module)})`);
  lines.push(
    `${formatShape(p.shape)} ${p.dtype} ${formatBytes(p.nbytes)}${p.device !== "cpu" ? ` on ${p.device}` : ""}`,
  );
  for (const a of p.params) lines.push(`${a} ${paramShape(b.index, a)}`);
  const ms = passes.reduce((s, x) => s + x.time_ms, 0);
  if (ms > 0) lines.push(formatMs(ms, "op"));
  if (passes.every((x) => x.is_dead_end)) lines.push("dead end: reaches no output");
  return literal(lines.join("\n"));
}

/** The node of a module call folded at the depth limit, standing for every pass inside it. */
function moduleNode(b: Builder, id: string, passes: Pass[], collapsed: string): GraphNode {
  const first = passes[0] as Pass;
  const call = callOf(collapsed);
  const { address } = call;
  const calls = b.rolled ? numCalls(b.index, address) : 1;
  const name = callName(b, call);
  const params = b.index.node(address)?.nested.num_params ?? 0;
  const summary = [
    calls > 1 ? `${calls} calls` : null,
    plural(passes.length, "pass", "passes"),
    params > 0 ? `${formatCount(params)} params` : null,
  ];
  const outs = b.index
    .module(address)
    ?.calls.filter((c) => b.rolled || c.label === collapsed)
    .flatMap((c) => c.outputs)
    .map((l) => b.index.pass(l))
    .filter((x): x is Pass => x !== undefined);
  const shapes = [...new Set((outs ?? []).map((x) => formatShape(x.shape)))];
  const lines = [name, className(b.index, address), summary.filter(Boolean).join(" · ")];
  if (shapes.length) lines.push(`out ${shapes.length <= 2 ? shapes.join(" | ") : "varies"}`);
  return {
    id,
    kind: "module",
    lines: lines.map(literal),
    tooltip: literal(
      `${name} (${className(b.index, address)}): ${plural(passes.length, "pass", "passes")} inside, ${plural(params, "parameter")}`,
    ),
    cluster: clusterFor(b, first.modules.slice(0, b.depth ?? first.modules.length)),
    dead: passes.every((x) => x.is_dead_end),
    highlighted: false,
    passes: passes.map((x) => x.label),
    order: first.id,
  };
}

/** The node of one pass (unrolled) or of the passes of one layer (rolled). */
function passNode(b: Builder, id: string, passes: Pass[]): GraphNode {
  const first = passes[0] as Pass;
  const title = b.rolled && passes.length > 1 ? `${first.layer} ×${passes.length}` : id;
  return {
    id,
    kind: nodeKind(first),
    lines: passLines(b, title, passes),
    tooltip: passTooltip(b, passes),
    cluster: clusterFor(b, first.modules.slice(0, b.depth ?? first.modules.length)),
    dead: passes.every((x) => x.is_dead_end),
    highlighted: false,
    passes: passes.map((x) => x.label),
    order: first.id,
  };
}

type PassPairs = { tail: string; head: string; pairs: [number, number][] };

/** One edge per (tail node, head node), with the (tail pass, head pass) numbers it carries. */
function collectEdges(b: Builder, repOf: Map<string, string>): Map<string, PassPairs> {
  const edges = new Map<string, PassPairs>();
  for (const child of b.index.log.passes) {
    const head = repOf.get(child.label) as string;
    for (const parentLabel of new Set(child.parents)) {
      const parent = b.index.pass(parentLabel);
      if (!parent) continue;
      const tail = repOf.get(parent.label) as string;
      // inside one collapsed module call: not drawn
      if (tail === head && head.startsWith("module:")) {
        const a = collapsedAt(b, parent);
        if (!b.rolled || a === collapsedAt(b, child)) continue;
      }
      const key = `${tail}\u0000${head}`;
      const e = edges.get(key);
      if (e) e.pairs.push([parent.pass, child.pass]);
      else edges.set(key, { tail, head, pairs: [[parent.pass, child.pass]] });
    }
  }
  return edges;
}

/** Builds the view of a run's graph. */
export function buildView(log: RunLog, options: ViewOptions): GraphView {
  const { mode, depth } = options;
  const highlight = options.highlight ?? null;
  const b: Builder = {
    index: new LogIndex(log),
    rolled: mode === "rolled",
    depth,
    usualDtype: mostCommon(log.passes.filter((p) => p.kind === "op").map((p) => p.dtype)),
    clusters: new Map(),
  };

  // Which node each pass is drawn as.
  const repOf = new Map<string, string>();
  const groups = new Map<string, Pass[]>();
  for (const p of log.passes) {
    const collapsed = collapsedAt(b, p);
    const id =
      collapsed !== null ? `module:${frameOf(b, collapsed)}` : b.rolled ? p.layer : p.label;
    repOf.set(p.label, id);
    const group = groups.get(id);
    if (group) group.push(p);
    else groups.set(id, [p]);
  }
  const nodes = new Map<string, GraphNode>();
  for (const [id, passes] of groups) {
    const collapsed = collapsedAt(b, passes[0] as Pass);
    const node =
      collapsed !== null ? moduleNode(b, id, passes, collapsed) : passNode(b, id, passes);
    if (highlight) node.highlighted = passes.some((x) => highlight.has(x.label));
    nodes.set(id, node);
  }

  const edges = [...collectEdges(b, repOf).values()];
  const nodeList = [...nodes.values()].sort((x, y) => x.order - y.order);
  const component = strongComponents(
    nodeList.map((n) => n.id),
    edges,
  );
  const edgeList: GraphEdge[] = edges.map(({ tail, head, pairs }) => {
    const t = nodes.get(tail) as GraphNode;
    const h = nodes.get(head) as GraphNode;
    const layers = b.rolled && t.kind !== "module" && h.kind !== "module";
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
  const view: GraphView = {
    mode,
    title: literal(`${log.model.class} · ${mode} · ${nodeList.length} nodes${folded}`),
    nodes: nodeList,
    edges: edgeList,
    clusters: orderClusters([...b.clusters.values()]),
  };
  if (options.color === "grad-norm") view.shading = shadeByGradNorm(b.index, nodeList);
  return view;
}

/** The words a node's tooltip gains for its gradient (or for why it has none). */
function gradTooltip(passes: Pass[], norm: number | null): string {
  if (norm !== null) return `grad norm ${formatStat(norm)}${passes.length > 1 ? " (largest)" : ""}`;
  const presence = gradPresence(passes);
  if (presence === "not finite") return "grad norm not finite";
  if (presence === "none") return "no gradient: the target does not depend on it";
  return "gradient not recorded";
}

/**
 * Gives each node its gradient norm (rolled and folded nodes: the largest over their passes) and
 * a tooltip line saying it, and returns the scale over them.
 */
function shadeByGradNorm(index: LogIndex, nodes: GraphNode[]): GradShading {
  for (const n of nodes) {
    const passes = n.passes.map((l) => index.pass(l)).filter((p): p is Pass => p !== undefined);
    n.gradNorm = maxGradNorm(passes);
    n.tooltip = `${n.tooltip}\n${literal(gradTooltip(passes, n.gradNorm))}`;
  }
  return {
    by: "grad-norm",
    scale: normScale(nodes.map((n) => n.gradNorm ?? null)),
    unshaded: nodes.filter((n) => n.gradNorm === null).length,
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
