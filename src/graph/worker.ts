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
  | { ok: true; svg: string; loadMs: number; layoutMs: number }
  | { ok: false; message: string };

async function render({ dot }: RenderRequest): Promise<RenderReply> {
  const t0 = performance.now();
  try {
    const graphviz = await Graphviz.load();
    const t1 = performance.now();
    const svg = graphviz.dot(dot, "svg");
    return { ok: true, svg, loadMs: t1 - t0, layoutMs: performance.now() - t1 };
  } catch (err) {
    return { ok: false, message: err instanceof Error ? err.message : String(err) };
  }
}

parentPort?.postMessage(await render(workerData as RenderRequest));
