/**
 * A GraphView as DOT, built with ts-graphviz: the look of each kind of node (the legend in
 * docs/graph.md), module clusters, loop-back edges, and the layout settings that keep large graphs
 * fast; with a grad-norm shading, the fills by gradient norm and a legend of their scale. Pure:
 * the text it returns goes to a file, to stdout, or to render.ts for SVG.
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
import { formatStat } from "../ui/format.js";
import { plural } from "../util/text.js";
import { LIGHT_TEXT_FROM, rampColor, shadeOf } from "./shade.js";
import type { GradShading, GraphNode, GraphView, NodeKind } from "./view.js";

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

/** The fill of a node without a gradient norm when nodes are shaded: none, white. */
const UNSHADED = "#ffffff";

/** The fill (and, on dark fills, white text) of a shade `t` along the ramp. */
function shadeFill(t: number): NodeAttributesObject {
  return { fillcolor: rampColor(t), ...(t >= LIGHT_TEXT_FROM ? { fontcolor: "#ffffff" } : {}) };
}

/**
 * A node's fill by its gradient norm. One without a norm is left unshaded: white, or the dead
 * look's grey, whatever its kind's own fill — a kind's colour would read as a shade.
 */
function gradFill(node: GraphNode, shading: GradShading): NodeAttributesObject {
  const norm = node.gradNorm ?? null;
  if (norm === null || shading.scale === null) return node.dead ? {} : { fillcolor: UNSHADED };
  return shadeFill(shadeOf(norm, shading.scale));
}

function nodeAttributes(view: GraphNode, shading: GradShading | null): NodeAttributesObject {
  const kind = KIND_STYLE[view.kind];
  const noGrad = shading !== null && (view.gradNorm ?? null) === null;
  const attrs: NodeAttributesObject = {
    ...kind,
    label: view.lines.join("\n"),
    tooltip: view.tooltip,
    class: `${view.kind}${view.dead ? " dead" : ""}${view.highlighted ? " highlighted" : ""}${noGrad ? " no-grad" : ""}`,
  };
  if (view.dead) Object.assign(attrs, DEAD, { style: `${kind.style},dashed` });
  if (shading) Object.assign(attrs, gradFill(view, shading));
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
  const shading = view.shading ?? null;
  for (const n of view.nodes) {
    const where = n.cluster === null ? g : (subgraphs.get(n.cluster) ?? g);
    models.set(n.id, where.createNode(n.id, nodeAttributes(n, shading)));
  }
  if (shading) addLegend(g, shading);
  for (const e of view.edges) {
    const attrs: EdgeAttributesObject = {};
    if (e.label !== null) attrs.label = e.label;
    if (e.dead) Object.assign(attrs, DEAD_EDGE);
    if (e.back) Object.assign(attrs, BACK_EDGE);
    g.createEdge([models.get(e.tail) as NodeModel, models.get(e.head) as NodeModel], attrs);
  }
  return g;
}

/** Swatches the legend shows between the smallest and the largest norm, both included. */
export const LEGEND_STEPS = 5;
/** The legend's cluster; its nodes' ids (`legend:…`) cannot be pass, layer or module labels. */
export const LEGEND_CLUSTER = "cluster_legend";

/** One swatch of the legend: its text, fill and hover text. */
type Swatch = { text: string; fill: NodeAttributesObject; tooltip: string };

const SCALE_TIP = "gradient norm: fills from lightest (smallest) to darkest (largest), log scale";

/** The legend's swatches, lightest first, then the unshaded one when some node has no norm. */
function legendSwatches(shading: GradShading): Swatch[] {
  const { scale, unshaded } = shading;
  const out: Swatch[] = [];
  const swatch = (text: string, t: number) =>
    out.push({ text, fill: shadeFill(t), tooltip: SCALE_TIP });
  if (scale?.zeros && scale.min > 0) swatch("0", 0);
  if (scale !== null && scale.max > scale.min) {
    for (let k = 0; k < LEGEND_STEPS; k++) {
      const t = k / (LEGEND_STEPS - 1);
      const norm = formatStat(scale.min * (scale.max / scale.min) ** t);
      swatch(k === 0 ? `min ${norm}` : k === LEGEND_STEPS - 1 ? `max ${norm}` : norm, t);
    }
  } else if (scale !== null) {
    swatch(`min = max ${formatStat(scale.max)}`, shadeOf(scale.max, scale));
  }
  if (unshaded > 0) {
    out.push({
      text: `no gradient · ${plural(unshaded, "node")}`,
      fill: { fillcolor: UNSHADED },
      tooltip:
        scale === null
          ? "no pass has a finite gradient norm"
          : "unshaded: no pass of the node has a finite gradient norm (not recorded, not finite, or the target does not depend on it)",
    });
  }
  return out;
}

/**
 * The shading's legend: a cluster of swatches, one rank (nodes without edges share the first),
 * from the smallest norm to the largest on the log scale, then the unshaded "no gradient".
 */
function addLegend(g: Digraph, shading: GradShading): void {
  const sg = g.createSubgraph(LEGEND_CLUSTER, {
    label: "gradient norm (log scale)",
    labeljust: "l",
    style: "rounded",
    color: "#8a9bb0",
    fontname: FONT,
    fontsize: 10,
    fontcolor: "#33475b",
  });
  for (const [i, { text, fill, tooltip }] of legendSwatches(shading).entries()) {
    sg.createNode(`legend:${i}`, {
      shape: "box",
      style: "filled",
      color: "#8a9bb0",
      ...fill,
      label: text,
      tooltip,
      class: "legend",
    });
  }
}

/** The view as DOT text. */
export function toDotText(view: GraphView, options: DotOptions): string {
  // no cap on the AST size: ts-graphviz refuses 100k AST nodes by default (~4000 graph nodes)
  return `${toDot(toModel(view, options), { convert: { maxASTNodes: 0 } })}\n`;
}
