/**
 * The worker thread that lays a graph out: loads the bundled WebAssembly Graphviz and turns the
 * DOT text it is given (workerData) into SVG, off the main thread so the progress display keeps
 * moving. It answers with one message (a RenderReply) and ends.
 */
import { parentPort, workerData } from "node:worker_threads";
import { Graphviz } from "@hpcc-js/wasm-graphviz";

export interface RenderRequest {
  dot: string;
}

export type RenderReply =
  | { ok: true; svg: string; loadMs: number; layoutMs: number; warnings: string[] }
  | { ok: false; message: string };

// Graphviz prints warnings and errors ("Out of memory") through console.error/log, bound when the
// module loads: collected here so they reach the caller instead of clobbering the status line.
const printed: string[] = [];
const collect = (...args: unknown[]) => {
  const line = args.map(String).join(" ").trim();
  if (line && !printed.includes(line)) printed.push(line);
};
console.error = collect;
console.warn = collect;
console.log = collect;

async function render({ dot }: RenderRequest): Promise<RenderReply> {
  const t0 = performance.now();
  try {
    const graphviz = await Graphviz.load();
    const t1 = performance.now();
    const svg = graphviz.dot(dot, "svg");
    const layoutMs = performance.now() - t1;
    return { ok: true, svg, loadMs: t1 - t0, layoutMs, warnings: printed };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { ok: false, message: [...printed, message].join("; ") };
  }
}

parentPort?.postMessage(await render(workerData as RenderRequest));
