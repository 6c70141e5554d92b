/**
 * DOT → SVG with the bundled WebAssembly Graphviz (@hpcc-js/wasm-graphviz), in a worker thread
 * (worker.ts) so that the main thread — and the spinner on stderr — stays free while dot lays the
 * graph out, which takes seconds for large models. No system Graphviz is needed.
 */
import { Worker } from "node:worker_threads";
import { TorchlensError } from "../errors.js";
import type { RenderReply, RenderRequest } from "./worker.js";

export interface Rendered {
  svg: string;
  /** Loading the WebAssembly module. */
  loadMs: number;
  /** Layout and SVG output. */
  layoutMs: number;
  /** What Graphviz warned about, each once. */
  warnings: string[];
}

/** Lays out `dot` and returns the SVG text. Failures are TorchlensErrors (exit 1). */
export function renderSvg(dot: string): Promise<Rendered> {
  const request: RenderRequest = { dot };
  const worker = new Worker(new URL("./worker.js", import.meta.url), { workerData: request });
  return new Promise<Rendered>((resolve, reject) => {
    const fail = (why: string, cause?: unknown) =>
      reject(
        new TorchlensError(`drawing the graph failed: ${why}`, {
          hint: "draw the rolled graph, fold modules with --depth N, or write DOT (-o graph.dot) and lay it out with a system Graphviz",
          cause,
        }),
      );
    worker.once("message", (reply: RenderReply) => {
      if (reply.ok) {
        const { svg, loadMs, layoutMs, warnings } = reply;
        resolve({ svg, loadMs, layoutMs, warnings });
      } else fail(`Graphviz: ${reply.message}`);
    });
    worker.once("error", (err) => fail(err.message, err));
    worker.once("exit", (code) => fail(`the layout worker stopped (exit code ${code})`));
  }).finally(() => {
    void worker.terminate();
  });
}
