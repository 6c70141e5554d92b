/**
 * Dtypes as log.json names them (torch's names without `torch.`), and as the npz stores them
 * (numpy dtype strings): element sizes of both, and which numpy dtype stands for which torch one.
 */

/** Bytes per element of each torch dtype. */
const TORCH_DTYPE_BYTES: Record<string, number> = {
  float64: 8,
  float32: 4,
  float16: 2,
  bfloat16: 2,
  float8_e4m3fn: 1,
  float8_e4m3fnuz: 1,
  float8_e5m2: 1,
  float8_e5m2fnuz: 1,
  float8_e8m0fnu: 1,
  complex128: 16,
  complex64: 8,
  complex32: 4,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint64: 8,
  uint32: 4,
  uint16: 2,
  uint8: 1,
  bool: 1,
  qint8: 1,
  quint8: 1,
  qint32: 4,
  quint4x2: 1,
};

/** Bytes per element of a torch dtype name; null when unknown. */
export function dtypeBytes(dtype: string): number | null {
  return TORCH_DTYPE_BYTES[dtype] ?? null;
}

/** Bytes of a tensor of this shape and dtype (0 for an unknown dtype). */
export function tensorBytes(shape: number[], dtype: string): number {
  return shape.reduce((n, d) => n * d, 1) * (dtypeBytes(dtype) ?? 0);
}

/**
 * The numpy dtypes (npz `descr`) torchlens stores, each with the torch dtype it stands for: what
 * `show` compares a pass's stored dtype against, and the dtypes `show` has statistics for.
 */
export const NUMPY_AS_TORCH: Record<string, string> = {
  "<f2": "float16",
  "<f4": "float32",
  "<f8": "float64",
  "|i1": "int8",
  "<i2": "int16",
  "<i4": "int32",
  "<i8": "int64",
  "|u1": "uint8",
  "<u2": "uint16",
  "<u4": "uint32",
  "<u8": "uint64",
  "|b1": "bool",
  "<c8": "complex64",
  "<c16": "complex128",
};

/**
 * Bytes per element of a plain numpy dtype string ("<f4", "|b1", "<U3", "<M8[ns]"); null when it
 * can't be told from the string (structured or object dtypes, typos).
 */
export function numpyItemSize(descr: string): number | null {
  const m = /^[<>|=]?([a-zA-Z])(\d+)(\[\w+\])?$/.exec(descr);
  if (!m) return null;
  const n = Number(m[2]);
  return m[1] === "U" ? 4 * n : n;
}

/** Bytes of an array of this numpy dtype and shape; null when the item size is unknown. */
export function numpyBytes(descr: string, shape: readonly number[]): number | null {
  const itemsize = numpyItemSize(descr);
  return itemsize === null ? null : shape.reduce((a, b) => a * b, 1) * itemsize;
}
