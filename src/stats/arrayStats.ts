/**
 * Summary statistics of one array's raw bytes, for `torchlens show`: count, min, max, mean,
 * population std (numpy's ddof=0), and counts of NaN, +Inf, -Inf and zeros. NaN and Inf are
 * counted and left out of min/max/mean/std, as numpy's nan* functions do. Complex arrays are
 * summarised by magnitude (|z|), bools as 0/1 with the number of trues.
 *
 * How: elements are decoded a block at a time into a float64 scratch buffer (typed-array `set`
 * converts natively; float16, int64 and complex need a loop), each block gets its sum and sum of
 * squared deviations from its own mean (two passes while the block sits in cache), and blocks
 * are merged with Chan et al.'s pairwise update, all relative to the first finite value. That is
 * one pass over memory, numerically stable and all in float64: on 50M float32 elements it agrees
 * with numpy over float64 to 1e-12, and with numpy's float32 defaults to 1e-6.
 */
import { TorchlensError } from "../errors.js";
import { NUMPY_AS_TORCH, numpyItemSize } from "../log/dtypes.js";

export interface ArrayStats {
  /** Elements in the array (all of them, NaN and Inf included). */
  count: number;
  /** Over finite elements; null when there are none. */
  min: number | null;
  max: number | null;
  mean: number | null;
  /** Population standard deviation (ddof=0). */
  std: number | null;
  nan: number;
  posinf: number;
  neginf: number;
  zeros: number;
  /** set for complex: stats are over the magnitude */
  over?: "magnitude";
  /** for bool: how many true */
  trues?: number;
}

/** Elements decoded per block: 32 KiB of float64, comfortably in L1/L2. */
const BLOCK = 4096;

/** A numpy dtype string without its byte-order character: "<f4" → "f4". */
type Kind =
  | "f2"
  | "f4"
  | "f8"
  | "i1"
  | "i2"
  | "i4"
  | "i8"
  | "u1"
  | "u2"
  | "u4"
  | "u8"
  | "b1"
  | "c8"
  | "c16";

/**
 * Running totals over finite values, merged block by block. Everything is relative to `shift`,
 * the first finite value seen: with a large common offset (values near 1e9, spread 1) the shifted
 * values and means are small, so neither block sums nor the running mean lose the digits that
 * carry the spread.
 */
class Acc {
  n = 0;
  shift = 0;
  /** Mean of the finite values so far, minus `shift`. */
  mean = 0;
  m2 = 0;
  min = Number.POSITIVE_INFINITY;
  max = Number.NEGATIVE_INFINITY;
  nan = 0;
  posinf = 0;
  neginf = 0;
  zeros = 0;

  /** Adds `v[0..len)`. */
  add(v: Float64Array, len: number): void {
    if (this.n === 0) {
      for (let i = 0; i < len; i++) {
        const x = v[i] as number;
        if (x - x === 0) {
          this.shift = x;
          break;
        }
      }
    }
    const shift = this.shift;
    let n = 0;
    let sum = 0;
    let min = this.min;
    let max = this.max;
    let zeros = 0;
    for (let i = 0; i < len; i++) {
      const x = v[i] as number;
      if (x - x === 0) {
        n++;
        sum += x - shift;
        if (x < min) min = x;
        if (x > max) max = x;
        if (x === 0) zeros++;
      } else if (Number.isNaN(x)) this.nan++;
      else if (x > 0) this.posinf++;
      else this.neginf++;
    }
    this.min = min;
    this.max = max;
    this.zeros += zeros;
    if (n === 0) return;
    const bmean = sum / n; // relative to shift
    let m2 = 0;
    if (n === len) {
      for (let i = 0; i < len; i++) {
        const d = (v[i] as number) - shift - bmean;
        m2 += d * d;
      }
    } else {
      for (let i = 0; i < len; i++) {
        const x = v[i] as number;
        if (x - x === 0) {
          const d = x - shift - bmean;
          m2 += d * d;
        }
      }
    }
    if (this.n === 0) {
      this.n = n;
      this.mean = bmean;
      this.m2 = m2;
      return;
    }
    // Chan, Golub & LeVeque: merge the block (n, bmean, m2) into the running totals.
    const total = this.n + n;
    const delta = bmean - this.mean;
    this.mean += (delta * n) / total;
    this.m2 += m2 + ((delta * delta * this.n) / total) * n;
    this.n = total;
  }
}

let halfTable: Float64Array | null = null;

/** All 65536 float16 values, decoded from their bits (sign, 5-bit exponent, 10-bit fraction). */
function float16Table(): Float64Array {
  if (halfTable) return halfTable;
  const t = new Float64Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0)
      t[h] = sign * frac * 2 ** -24; // zero and subnormals
    else if (exp === 0x1f) t[h] = frac === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
    else t[h] = sign * (1024 + frac) * 2 ** (exp - 25);
  }
  halfTable = t;
  return t;
}

/** A typed-array class: what `view` needs to make one over raw bytes. */
interface TypedArrayClass<T> {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): T;
  readonly BYTES_PER_ELEMENT: number;
}

/** A typed-array view over `data`, copying only when its offset is not aligned for `Typed`. */
function view<T>(data: Uint8Array, Typed: TypedArrayClass<T>): T {
  const bytesPer = Typed.BYTES_PER_ELEMENT;
  const src = data.byteOffset % bytesPer === 0 ? data : new Uint8Array(data);
  return new Typed(src.buffer, src.byteOffset, src.byteLength / bytesPer);
}

type NumberView =
  | Float32Array
  | Int8Array
  | Int16Array
  | Int32Array
  | Uint8Array
  | Uint16Array
  | Uint32Array;

/** The dtypes a typed array reads as they are, converted to float64 by `set`. */
const PLAIN: Partial<Record<Kind, TypedArrayClass<NumberView>>> = {
  f4: Float32Array,
  i1: Int8Array,
  i2: Int16Array,
  i4: Int32Array,
  u1: Uint8Array,
  u2: Uint16Array,
  u4: Uint32Array,
};

/**
 * Statistics of the array whose raw little-endian bytes are `data` and numpy dtype is `descr`
 * (one of the dtypes in NUMPY_AS_TORCH: <f2 <f4 <f8 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1 <c8
 * <c16). Shape doesn't matter.
 */
export function arrayStats(descr: string, data: Buffer | Uint8Array): ArrayStats {
  if (!(descr in NUMPY_AS_TORCH)) {
    throw new TorchlensError(
      `can't compute statistics of dtype ${JSON.stringify(descr)}: supported are ${Object.keys(NUMPY_AS_TORCH).join(" ")}`,
    );
  }
  const kind = descr.slice(1) as Kind;
  const size = numpyItemSize(descr) as number;
  if (data.byteLength % size !== 0) {
    throw new TorchlensError(
      `array of ${descr} has ${data.byteLength} bytes, not a multiple of its item size ${size}`,
    );
  }
  const count = data.byteLength / size;
  const acc = new Acc();
  const decode = blockDecoder(kind, data, new Float64Array(Math.min(BLOCK, Math.max(count, 1))));
  for (let at = 0; at < count; at += BLOCK) {
    const len = Math.min(BLOCK, count - at);
    acc.add(decode(at, len), len);
  }

  const any = acc.n > 0;
  const stats: ArrayStats = {
    count,
    min: any ? acc.min : null,
    max: any ? acc.max : null,
    mean: any ? acc.shift + acc.mean : null,
    std: any ? Math.sqrt(Math.max(acc.m2, 0) / acc.n) : null,
    nan: acc.nan,
    posinf: acc.posinf,
    neginf: acc.neginf,
    zeros: acc.zeros,
  };
  if (kind === "c8" || kind === "c16") stats.over = "magnitude";
  // bools decode to 0 and 1, all finite: the trues are the elements that are not zero
  if (kind === "b1") stats.trues = count - acc.zeros;
  return stats;
}

/**
 * Elements `[at, at + len)` as float64: a view for float64 data, else decoded into `scratch`
 * (typed-array `set` converts natively; float16, bool, int64 and complex need a loop).
 */
type BlockDecoder = (at: number, len: number) => Float64Array;

function blockDecoder(kind: Kind, data: Uint8Array, scratch: Float64Array): BlockDecoder {
  switch (kind) {
    case "f8": {
      const v = view(data, Float64Array);
      return (at, len) => v.subarray(at, at + len);
    }
    case "b1":
      return (at, len) => {
        for (let i = 0; i < len; i++) scratch[i] = data[at + i] === 0 ? 0 : 1;
        return scratch;
      };
    case "f2": {
      const v = view(data, Uint16Array);
      const table = float16Table();
      return (at, len) => {
        for (let i = 0; i < len; i++) scratch[i] = table[v[at + i] as number] as number;
        return scratch;
      };
    }
    case "i8":
    case "u8": {
      // Each int64 as two 32-bit halves: hi * 2^32 is exact and the one addition of lo rounds
      // once, so this equals Number(BigInt64Array[i]) (round to nearest), without a BigInt per element.
      const lo = view(data, Uint32Array);
      const hi = kind === "i8" ? new Int32Array(lo.buffer, lo.byteOffset, lo.length) : lo;
      return (at, len) => {
        for (let i = 0, j = 2 * at; i < len; i++, j += 2) {
          scratch[i] = (hi[j + 1] as number) * 4294967296 + (lo[j] as number);
        }
        return scratch;
      };
    }
    case "c8":
    case "c16": {
      const v = kind === "c8" ? view(data, Float32Array) : view(data, Float64Array);
      return (at, len) => {
        for (let i = 0, j = 2 * at; i < len; i++, j += 2) {
          scratch[i] = magnitude(v[j] as number, v[j + 1] as number);
        }
        return scratch;
      };
    }
    default: {
      const v = view(data, PLAIN[kind] as TypedArrayClass<NumberView>);
      return (at, len) => {
        scratch.set(v.subarray(at, at + len));
        return scratch;
      };
    }
  }
}

/** |re + i·im| as numpy's abs gives it: Inf if either part is infinite (even with NaN), else NaN if either is. */
function magnitude(re: number, im: number): number {
  const m = Math.sqrt(re * re + im * im);
  // The squares overflow or underflow only for extreme parts (and NaN/Inf need hypot's rule);
  // hypot gets those right but is several times slower.
  return m > 1e-150 && m < 1e150 ? m : Math.hypot(re, im);
}
