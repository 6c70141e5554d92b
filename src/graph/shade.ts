/**
 * Gradient norms as `graph --color grad-norm` shades them and `ls --sort grad-norm` orders them
 * (docs/gradients.md): a pass's norm as the log gives it, a group's as the largest of its
 * passes', and the log-scale, light-to-dark fill ramp. Pure: no Graphviz, no files.
 */
import type { Pass } from "../log/types.js";

/**
 * A pass's gradient norm, or null when it has none to show: not recorded (no --grads, or
 * --layers left it out; /1 logs have no `grad` at all), the target does not depend on it, or the
 * norm is not finite (the log then holds null).
 */
export function gradNorm(p: Pass): number | null {
  const grad = p.grad ?? null;
  return grad?.status === "saved" && grad.norm !== null && Number.isFinite(grad.norm)
    ? grad.norm
    : null;
}

/** The largest finite gradient norm of some passes (a rolled node's, a layer's); null: none has one. */
export function maxGradNorm(passes: readonly Pass[]): number | null {
  let best: number | null = null;
  for (const p of passes) {
    const n = gradNorm(p);
    if (n !== null && (best === null || n > best)) best = n;
  }
  return best;
}

/** What a group of passes has by way of gradients, for the words beside a missing norm. */
export type GradPresence = "norm" | "not finite" | "none" | "not recorded";

export function gradPresence(passes: readonly Pass[]): GradPresence {
  if (maxGradNorm(passes) !== null) return "norm";
  const grads = passes.map((p) => p.grad ?? null);
  if (grads.some((g) => g?.status === "saved")) return "not finite";
  if (grads.some((g) => g?.status === "none")) return "none";
  return "not recorded";
}

/** The range the ramp spans: the smallest positive and the largest finite norm. */
export interface NormScale {
  /** 0 only when every norm is 0. */
  min: number;
  max: number;
  /** Some norm is exactly 0: log scale has no place for it, so it takes the lightest fill. */
  zeros: boolean;
}

/** The scale over some norms (nulls ignored); null when none is finite. */
export function normScale(norms: readonly (number | null)[]): NormScale | null {
  const finite = norms.filter((n): n is number => n !== null && Number.isFinite(n));
  if (!finite.length) return null;
  const positive = finite.filter((n) => n > 0);
  return {
    min: positive.length ? Math.min(...positive) : 0,
    max: positive.length ? Math.max(...positive) : 0,
    zeros: finite.some((n) => n === 0),
  };
}

/**
 * Where a norm sits on the scale, 0 (lightest) to 1 (darkest), by its logarithm: gradients
 * span orders of magnitude, and a linear ramp would leave all but the largest pale. One positive
 * norm throughout (min = max) is drawn mid-ramp.
 */
export function shadeOf(norm: number, scale: NormScale): number {
  if (norm <= 0 || norm < scale.min) return 0;
  if (scale.max <= scale.min) return 0.5;
  if (norm >= scale.max) return 1;
  return Math.log(norm / scale.min) / Math.log(scale.max / scale.min);
}

/**
 * ColorBrewer's Purples, light to dark. Shading replaces every node's fill (its kind still shows
 * in its shape and border); the two palest stops are left out so the lightest shade stands apart
 * from the white of an unshaded node.
 */
const RAMP = ["#dadaeb", "#bcbddc", "#9e9ac8", "#807dba", "#6a51a3", "#54278f", "#3f007d"];

const rgb = (hex: string) => [1, 3, 5].map((i) => Number.parseInt(hex.slice(i, i + 2), 16));

/** The fill at `t` (0..1) along the ramp, interpolated between its stops. */
export function rampColor(t: number): string {
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const [a, b] = [rgb(RAMP[i] as string), rgb(RAMP[i + 1] as string)];
  const mix = a.map((c, k) => Math.round(c + ((b[k] as number) - c) * (x - i)));
  return `#${mix.map((c) => c.toString(16).padStart(2, "0")).join("")}`;
}

/** From this far along the ramp the fill is dark enough that text on it is drawn white. */
export const LIGHT_TEXT_FROM = 0.6;
