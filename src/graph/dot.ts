/**
 * A GraphView as DOT, built with ts-graphviz: the look of each kind of node (the legend in
 * docs/graph.md), module clusters, loop-back edges, and the layout settings that keep large graphs
 * fast. Pure: the text it returns goes to a file, to stdout, or to render.ts for SVG.
 */
import {
  Digraph,
  type EdgeAttributesObject,
  type GraphAttributesObject,
  type NodeAttributesObject,
  type NodeModel,
  type SubgraphModel,
  toDot,
} from "ts-graphviz";
import type { GraphView, NodeKind } from "./view.js";

export type Direction = "TB" | "LR" | "BT";
export const DIRECTIONS: readonly Direction[] = ["TB", "LR", "BT"];

const FONT = "Helvetica,Arial,sans-serif";

/** Shape and colours per kind of node. */
export const KIND_STYLE: Record<NodeKind, NodeAttributesObject> = {
  input: { shape: "oval", style: "filled", fillcolor: "#c8e6c9", color: "#2e7d32" },
  output: { shape: "oval", style: "filled", fillcolor: "#ffcdd2", color: "#c62828" },
  param_op: { shape: "box", style: "filled", fillcolor: "#cfe2fb", color: "#1f5fae" },
  op: { shape: "box", style: "rounded,filled", fillcolor: "#ffffff", color: "#555555" },
  buffer: { shape: "cylinder", style: "filled", fillcolor: "#fff3c4", color: "#9a7b00" },
  internal: { shape: "note", style: "filled", fillcolor: "#ead9f5", color: "#6a1b9a" },
  module: { shape: "box3d", style: "filled", fillcolor: "#e4e4e4", color: "#424242" },
};

const DEAD: NodeAttributesObject = { fillcolor: "#f4f4f4", color: "#bdbdbd", fontcolor: "#9e9e9e" };
const HIGHLIGHT: NodeAttributesObject = { color: "#f57c00", penwidth: 3 };
export const BACK_EDGE: EdgeAttributesObject = {
  color: "#1e6fd9",
  fontcolor: "#1e6fd9",
  style: "dashed",
  penwidth: 1.3,
  constraint: false,
};
const DEAD_EDGE: EdgeAttributesObject = { color: "#c4c4c4", fontcolor: "#9e9e9e" };
/** Cluster fills alternate by nesting level so nested modules stand apart. */
const CLUSTER_FILLS = ["#f5f8fc", "#e9eff7"];

/**
 * Layout settings by graph size. dot's network simplex (ranking, then x placement) grows much
 * faster than the graph, and long edges — a pass read by many later passes, DenseNet's
 * concatenations — multiply its work: measured with bench/graph.mjs and by hand here, densenet201
 * (1115 nodes, 2917 edges) took 8.9 s uncapped and 2.8 s with these caps; folded at --depth 2
 * (129 nodes but 1931 edges) 105 s and 8 s. Straight edges (splines=false) saved nothing
 * measurable up to 4000 nodes, so edges stay curved.
 */
export function layoutAttributes(numNodes: number, numEdges: number): GraphAttributesObject {
  if (numNodes + numEdges <= LARGE) return {};
  return { nslimit: 2, nslimit1: 2, mclimit: 0.3, searchsize: 20 };
}
/** Past this many nodes and edges together the layout is capped (see layoutAttributes). */
export const LARGE = 800;

export interface DotOptions {
  direction: Direction;
}

/** Every node starts from these (the plain op's look), so most nodes carry only their text. */
const NODE_DEFAULTS: NodeAttributesObject = {
  ...KIND_STYLE.op,
  fontname: FONT,
  fontsize: 10,
  margin: "0.16,0.04",
  height: 0.3,
};

function nodeAttributes(view: GraphView["nodes"][number]): NodeAttributesObject {
  const kind = KIND_STYLE[view.kind];
  const attrs: NodeAttributesObject = {
    ...kind,
    label: view.lines.join("\n"),
    tooltip: view.tooltip,
    class: `${view.kind}${view.dead ? " dead" : ""}${view.highlighted ? " highlighted" : ""}`,
  };
  if (view.dead) Object.assign(attrs, DEAD, { style: `${kind.style},dashed` });
  if (view.highlighted) Object.assign(attrs, HIGHLIGHT);
  for (const [k, v] of Object.entries(NODE_DEFAULTS))
    if (attrs[k as keyof NodeAttributesObject] === v) delete attrs[k as keyof NodeAttributesObject];
  return attrs;
}

/** The view as a ts-graphviz model. */
export function toModel(view: GraphView, options: DotOptions): Digraph {
  const g = new Digraph("torchlens", {
    rankdir: options.direction,
    label: view.title,
    labelloc: "t",
    fontname: FONT,
    fontsize: 12,
    nodesep: 0.2,
    ranksep: 0.3,
    outputorder: "edgesfirst",
    ...layoutAttributes(view.nodes.length, view.edges.length),
  });
  g.attributes.node.apply(NODE_DEFAULTS);
  g.attributes.edge.apply({
    fontname: FONT,
    fontsize: 9,
    arrowsize: 0.6,
    color: "#555555",
    fontcolor: "#333333",
  });

  const subgraphs = new Map<string, SubgraphModel>();
  for (const c of view.clusters) {
    const parent = c.parent === null ? g : (subgraphs.get(c.parent) ?? g);
    const sg = parent.createSubgraph(c.id, {
      label: c.label,
      labeljust: "l",
      style: "rounded,filled",
      fillcolor: CLUSTER_FILLS[(c.level - 1) % CLUSTER_FILLS.length],
      color: "#8a9bb0",
      fontname: FONT,
      fontsize: 10,
      fontcolor: "#33475b",
    });
    subgraphs.set(c.id, sg);
  }

  const models = new Map<string, NodeModel>();
  for (const n of view.nodes) {
    const where = n.cluster === null ? g : (subgraphs.get(n.cluster) ?? g);
    models.set(n.id, where.createNode(n.id, nodeAttributes(n)));
  }
  for (const e of view.edges) {
    const attrs: EdgeAttributesObject = {};
    if (e.label !== null) attrs.label = e.label;
    if (e.dead) Object.assign(attrs, DEAD_EDGE);
    if (e.back) Object.assign(attrs, BACK_EDGE);
    g.createEdge([models.get(e.tail) as NodeModel, models.get(e.head) as NodeModel], attrs);
  }
  return g;
}

/** The view as DOT text. */
export function toDotText(view: GraphView, options: DotOptions): string {
  // no cap on the AST size: ts-graphviz refuses 100k AST nodes by default (~4000 graph nodes)
  return `${toDot(toModel(view, options), { convert: { maxASTNodes: 0 } })}\n`;
}
