/**
 * The .npy format as the npz reader needs it: the magic, the header dict (parsed strictly, see
 * pyLiteral.ts) and reordering Fortran-order data to C order. The writer's header is
 * `npyHeader` in npz.ts.
 */
import { LiteralError, PyDict, PyTuple, type PyValue, parsePyLiteral } from "./pyLiteral.js";

/** The first six bytes of every .npy file. */
export const NPY_MAGIC = Buffer.from("\x93NUMPY", "latin1");
/** Largest .npy header we parse; numpy writes headers of a few hundred bytes. */
export const MAX_NPY_HEADER = 16 << 20;

/** What a .npy header says about the array that follows it. */
export interface NpyHeader {
  descr: string;
  fortranOrder: boolean;
  shape: number[];
}

/** Parses and checks the header dict; throws {@link LiteralError} on anything unexpected. */
export function parseNpyHeader(text: string): NpyHeader {
  const value = parsePyLiteral(text, "dict");
  if (!(value instanceof PyDict)) throw new LiteralError("it is not a dict");
  const fields = new Map<string, PyValue>();
  for (const [k, v] of value.entries) {
    if (typeof k !== "string") throw new LiteralError("a key is not a string");
    if (fields.has(k)) throw new LiteralError(`key '${k}' appears twice`);
    fields.set(k, v);
  }
  const names = [...fields.keys()].sort().join(", ");
  if (names !== "descr, fortran_order, shape") {
    throw new LiteralError(`expected keys descr, fortran_order, shape; got ${names || "none"}`);
  }
  const descr = fields.get("descr");
  const fortranOrder = fields.get("fortran_order");
  const shape = fields.get("shape");
  if (typeof descr !== "string") {
    throw new LiteralError(
      "descr is not a plain dtype string (structured dtypes are not supported)",
    );
  }
  if (typeof fortranOrder !== "boolean")
    throw new LiteralError("fortran_order is not True or False");
  if (!(shape instanceof PyTuple)) throw new LiteralError("shape is not a tuple");
  const dims = shape.items.map((d) => {
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      throw new LiteralError("shape holds something other than non-negative integers");
    }
    return d;
  });
  return { descr, fortranOrder, shape: dims };
}

/** Reorders Fortran-order bytes to C order (a copy). */
export function fortranToC(src: Buffer, shape: number[], itemsize: number): Buffer {
  const n = shape.length;
  const count = shape.reduce((a, b) => a * b, 1);
  if (n < 2 || count <= 1) return src;
  const out = Buffer.allocUnsafeSlow(src.length);
  // Fortran strides in bytes: the first index varies fastest.
  const fstride: number[] = [];
  let s = itemsize;
  for (const d of shape) {
    fstride.push(s);
    s *= d;
  }
  const idx = new Array<number>(n).fill(0);
  const last = n - 1;
  const lastDim = shape[last] as number;
  const lastStride = fstride[last] as number;
  let fOff = 0;
  let o = 0;
  // Walk C order one row (last index) at a time; odometer over the other indices.
  for (;;) {
    for (let j = 0, f = fOff; j < lastDim; j++, f += lastStride, o += itemsize) {
      src.copy(out, o, f, f + itemsize);
    }
    let k = last - 1;
    while (k >= 0) {
      const i = (idx[k] as number) + 1;
      if (i < (shape[k] as number)) {
        idx[k] = i;
        fOff += fstride[k] as number;
        break;
      }
      fOff -= (i - 1) * (fstride[k] as number);
      idx[k] = 0;
      k--;
    }
    if (k < 0) return out;
  }
}
