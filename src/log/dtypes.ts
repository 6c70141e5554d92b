/** Dtypes as log.json names them (torch's names without `torch.`), and as the npz stores them. */

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

/** numpy dtype strings (npz `descr`) as torch names, to tell when a pass was stored as another dtype. */
export const NUMPY_AS_TORCH: Record<string, string> = {
  "<f2": "float16",
  "<f4": "float32",
  "<f8": "float64",
  "<c8": "complex64",
  "<c16": "complex128",
  "|i1": "int8",
  "<i2": "int16",
  "<i4": "int32",
  "<i8": "int64",
  "|u1": "uint8",
  "<u2": "uint16",
  "<u4": "uint32",
  "<u8": "uint64",
  "|b1": "bool",
};
