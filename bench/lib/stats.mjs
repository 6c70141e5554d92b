/** Median, min and max of a list of numbers (nulls and NaNs left out). */
export function summarize(values) {
  const xs = values
    .filter((v) => typeof v === "number" && Number.isFinite(v))
    .sort((a, b) => a - b);
  if (!xs.length) return { median: null, min: null, max: null, n: 0 };
  const mid = xs.length >> 1;
  const median = xs.length % 2 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
  return { median, min: xs[0], max: xs[xs.length - 1], n: xs.length };
}

export const MB = 1e6;
export const MiB = 1 << 20;

/** A number with a sensible count of digits for a table cell. */
export function fmt(v, digits) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (digits !== undefined) return v.toFixed(digits);
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

/** "median (min–max)" for one summary, each value passed through `scale` first. */
export function cell(s, scale = 1, digits) {
  if (!s || s.median === null) return "–";
  const m = fmt(s.median * scale, digits);
  if (s.n < 2) return m;
  return `${m} (${fmt(s.min * scale, digits)}–${fmt(s.max * scale, digits)})`;
}
