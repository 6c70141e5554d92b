/**
 * Selectors: which passes a user means by `--layers`. A comma-separated list; each selector is,
 * in this order of precedence:
 *
 *   relu_3_7:2            a pass label
 *   relu_3_7              a layer label: all its passes
 *   conv2d_3              a short layer label ({name}_{index among layers of that name})
 *   encoder.layers.0      a module address: every pass inside it (any call)
 *   encoder.layers.0:2    one call of a module: every pass inside that call
 *   encoder.layers.0@out  a module's outputs (of every call; `addr:2@out` for one call)
 *   linear                a function name (as in labels: `add` for `+`, `getitem` for `[]`)
 *   5, -1                 an ordinal into the passes in execution order, 0-based; negative from the end
 *   conv2d_*, *relu*      a glob over pass labels, layer labels and module addresses
 *
 * A selector that matches nothing is an error listing close matches. `planSelection` tells which
 * selectors the agent can apply while ops happen (one forward pass) and which need final labels
 * (a dry run first).
 */
import { usageError } from "../errors.js";
import { closeMatches } from "../util/suggest.js";
import { parseCall } from "./logIndex.js";
import type { Pass, RunLog } from "./types.js";

export type SelectorKind =
  | "pass"
  | "layer"
  | "short"
  | "module"
  | "call"
  | "outputs"
  | "function"
  | "ordinal"
  | "glob";

export interface Match {
  selector: string;
  kind: SelectorKind;
  labels: string[];
}

export function splitSelectors(spec: string | string[]): string[] {
  const parts = (Array.isArray(spec) ? spec : [spec]).flatMap((s) => s.split(","));
  const out = parts.map((s) => s.trim()).filter(Boolean);
  if (!out.length)
    throw usageError(
      "--layers was given no selectors",
      "give a comma-separated list, e.g. --layers conv2d_1,relu_2_4:1,features.3",
    );
  return out;
}

const GLOB = /[*?[]/;

function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      const end = glob.indexOf("]", i + 1);
      if (end < 0) re += "\\[";
      else {
        re += `[${glob.slice(i + 1, end).replace(/\\/g, "\\\\")}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

/** The module addresses a pass ran in, outermost first (each call's address). */
function addressesOf(p: Pass): string[] {
  return p.modules.map((m) => parseCall(m)?.address ?? m);
}

/** A module address matches itself and everything nested under it. */
function insideModule(p: Pass, address: string): boolean {
  return addressesOf(p).includes(address);
}

/** Resolve one selector against a log. Returns null when it matches nothing. */
export function matchSelector(log: RunLog, selector: string): Match | null {
  const passes = log.passes;
  const byLabel = new Map(passes.map((p) => [p.label, p]));
  if (byLabel.has(selector)) return { selector, kind: "pass", labels: [selector] };
  const layer = log.layers.find((l) => l.label === selector);
  if (layer) return { selector, kind: "layer", labels: [...layer.passes] };
  const short = log.layers.filter(
    (l) => l.label.replace(/_\d+$/, "") === selector && /_\d+_\d+$/.test(l.label),
  );
  if (short.length === 1) return { selector, kind: "short", labels: [...short[0].passes] };
  const modules = new Set(log.modules.map((m) => m.address).filter((a) => a !== ""));
  const out = /^(.*?)(?::(\d+))?@out$/.exec(selector);
  if (out && modules.has(out[1])) {
    const entry = log.modules.find((m) => m.address === out[1]);
    const calls = (entry?.calls ?? []).filter(
      (c) => out[2] === undefined || c.call === Number(out[2]),
    );
    if (calls.length)
      return { selector, kind: "outputs", labels: [...new Set(calls.flatMap((c) => c.outputs))] };
  }
  if (modules.has(selector))
    return {
      selector,
      kind: "module",
      labels: passes.filter((p) => insideModule(p, selector)).map((p) => p.label),
    };
  const call = parseCall(selector);
  if (call && modules.has(call.address)) {
    return {
      selector,
      kind: "call",
      labels: passes.filter((p) => p.modules.includes(selector)).map((p) => p.label),
    };
  }
  const byFunction = passes.filter(
    (p) => p.layer.replace(/_\d+_\d+$/, "") === selector || p.func === selector,
  );
  if (byFunction.length)
    return { selector, kind: "function", labels: byFunction.map((p) => p.label) };
  if (/^-?\d+$/.test(selector)) {
    const k = Number(selector);
    const p = passes[k < 0 ? passes.length + k : k];
    return p ? { selector, kind: "ordinal", labels: [p.label] } : null;
  }
  if (GLOB.test(selector)) {
    const re = globToRegExp(selector);
    const hit = new Set<string>();
    for (const p of passes) {
      if (re.test(p.label) || re.test(p.layer) || addressesOf(p).some((a) => re.test(a)))
        hit.add(p.label);
    }
    return hit.size
      ? {
          selector,
          kind: "glob",
          labels: passes.filter((p) => hit.has(p.label)).map((p) => p.label),
        }
      : null;
  }
  return null;
}

/**
 * Resolve a selector list to pass labels in execution order; a selector matching nothing is a
 * usage error that lists close matches.
 */
export function selectPasses(
  log: RunLog,
  selectors: string[],
  what = "--layers",
): { labels: string[]; matches: Match[] } {
  const matches: Match[] = [];
  for (const s of selectors) {
    const m = matchSelector(log, s);
    if (!m) {
      const known = [
        ...log.passes.map((p) => p.label),
        ...log.layers.map((l) => l.label),
        ...log.layers.map((l) => l.label.replace(/_\d+_\d+$/, "")),
        ...log.modules.map((m2) => m2.address).filter(Boolean),
      ];
      const close = closeMatches(s, known);
      throw usageError(
        `${what}: ${JSON.stringify(s)} matches no pass, layer, module or function in this run${close.length ? `; close: ${close.join(", ")}` : ""}`,
        "see the labels with `torchlens ls RUN` and the module addresses with `torchlens ls RUN --modules`",
      );
    }
    matches.push(m);
  }
  const wanted = new Set(matches.flatMap((m) => m.labels));
  return { labels: log.passes.filter((p) => wanted.has(p.label)).map((p) => p.label), matches };
}

/**
 * What the agent can decide while ops happen: function names, module addresses (any call) and
 * non-negative ordinals. Anything else — labels, globs, negative ordinals, module outputs, single
 * calls — needs final labels, so extract does a dry run first.
 */
export interface AgentSelection {
  /** Bare words: a module address when the model has one by that name, else a function name. */
  words: string[];
  /** Dotted module addresses. */
  modules: string[];
  ordinals: number[];
}

export function planSelection(
  selectors: string[],
): { agent: AgentSelection } | { needsLabels: true } {
  const agent: AgentSelection = { words: [], modules: [], ordinals: [] };
  for (const s of selectors) {
    if (/^\d+$/.test(s)) agent.ordinals.push(Number(s));
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(s) && !/_\d+$/.test(s)) {
      agent.words.push(s);
    } else if (/^[A-Za-z0-9_~]+(\.[A-Za-z0-9_~]+)+$/.test(s)) agent.modules.push(s);
    else return { needsLabels: true };
  }
  return { agent };
}
