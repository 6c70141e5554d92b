/**
 * CRC-32 of a concatenation from the CRCs of its parts (zlib's `crc32_combine`, which Node does not
 * expose): the agent sends the CRC of the bytes it wrote into an .npz itself, and the zip entry
 * needs the CRC of the .npy header followed by those bytes.
 *
 * Appending `len` zero bits to a CRC register is a linear map over GF(2); the operator for `len`
 * bytes is built by repeated squaring of the one-zero-bit operator, as zlib does.
 */

/** `mat` (32 columns) times the vector `vec`, over GF(2). */
function times(mat: Uint32Array, vec: number): number {
  let sum = 0;
  let v = vec >>> 0;
  for (let i = 0; v !== 0; i++, v >>>= 1) if (v & 1) sum ^= mat[i] as number;
  return sum >>> 0;
}

function square(out: Uint32Array, mat: Uint32Array): void {
  for (let n = 0; n < 32; n++) out[n] = times(mat, mat[n] as number);
}

/** The CRC-32 of A followed by B, given crc(A), crc(B) and B's length in bytes (up to 2^53). */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB <= 0) return crcA >>> 0;
  const odd = new Uint32Array(32); // the operator for one zero bit
  const even = new Uint32Array(32);
  odd[0] = 0xedb88320; // the reflected CRC-32 polynomial
  for (let n = 1, row = 1; n < 32; n++, row <<= 1) odd[n] = row;
  square(even, odd); // two zero bits
  square(odd, even); // four zero bits
  let crc = crcA >>> 0;
  let len = lengthB;
  // the first squaring gives the operator for one zero byte; each next one doubles it
  for (;;) {
    square(even, odd);
    if (len % 2 === 1) crc = times(even, crc);
    len = Math.floor(len / 2);
    if (len === 0) break;
    square(odd, even);
    if (len % 2 === 1) crc = times(odd, crc);
    len = Math.floor(len / 2);
    if (len === 0) break;
  }
  return (crc ^ crcB) >>> 0;
}
