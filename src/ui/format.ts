/**
 * How values read in output, written once for every command: bytes, times, shapes, counts,
 * statistics and module names. Tables (table.ts) lay the cells out; this file says what is in them.
 */

/** 1234 → "1.2 KB" (decimal units). */
export function formatBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v >= 100 || u === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

/**
 * A time in milliseconds, in one of three styles:
 * - "duration" (the default): how long a command or a step took, "850 ms" or "1.23 s";
 * - "op": a recorded op time (or a sum of them) to the microsecond, since single ops take
 *   microseconds: "0.042 ms";
 * - "cell": the same number without the unit, for a "time ms" table column: "0.042".
 */
export function formatMs(ms: number, style: "duration" | "op" | "cell" = "duration"): string {
  if (style === "duration")
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
  return style === "cell" ? ms.toFixed(3) : `${ms.toFixed(3)} ms`;
}

/** A shape as `1x3x32x32`; a 0-d tensor as `()`. */
export function formatShape(shape: number[]): string {
  return shape.length ? shape.join("x") : "()";
}

/** A statistic: six significant digits, integers as they are, null as "-". */
export function formatStat(x: number | null): string {
  if (x === null) return "-";
  if (Number.isInteger(x) && Math.abs(x) < 1e15) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-4 || a >= 1e15)) return x.toExponential(5).replace(/\.?0+e/, "e");
  return String(Number(x.toPrecision(6)));
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

/** How a module address reads in tables: the model itself has the empty address. */
export function moduleName(address: string): string {
  return address === "" ? "(model)" : address;
}
