/**
 * CRC-32 of a concatenation from the CRCs of its parts (zlib's `crc32_combine`, which Node does not
 * expose): the agent sends the CRC of the bytes it wrote into an .npz itself, and the zip entry
 * needs the CRC of the .npy header followed by those bytes.
 *
 * Appending n zero bytes to a CRC register multiplies it by x^(8n) modulo the CRC polynomial, so
 * crc(A‖B) = crc(A)·x^(8·|B|) ⊕ crc(B) over GF(2). As zlib 1.2.12 does, x^(8n) is the product of
 * the powers x^(2^k) for the bits of 8n, taken from a table of 32 (their sequence repeats with
 * period 32): some 32·log2(n) shifts, where the older squaring of 32×32 operators cost 1024·log2(n).
 */

const POLY = 0xedb88320; // the reflected CRC-32 polynomial

/** a·b modulo the polynomial, both in reflected bit order (x^0 is the top bit). */
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  let bb = b >>> 0;
  for (;;) {
    if ((a & m) !== 0) {
      p ^= bb;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    bb = bb & 1 ? (bb >>> 1) ^ POLY : bb >>> 1;
  }
  return p >>> 0;
}

/** X2N[k] = x^(2^k) modulo the polynomial. */
const X2N = (() => {
  const table = new Array<number>(32);
  let p = 0x40000000; // x^1
  table[0] = p;
  for (let k = 1; k < 32; k++) table[k] = p = multModP(p, p);
  return table;
})();

/** x^(n·2^k) modulo the polynomial, for n up to 2^53. */
function x2nModP(n: number, k: number): number {
  let p = 0x80000000; // x^0
  let rest = n;
  let bit = k;
  while (rest > 0) {
    if (rest % 2 === 1) p = multModP(X2N[bit & 31] as number, p);
    rest = Math.floor(rest / 2);
    bit++;
  }
  return p;
}

/** The CRC-32 of A followed by B, given crc(A), crc(B) and B's length in bytes (up to 2^53). */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB <= 0) return crcA >>> 0;
  return (multModP(x2nModP(lengthB, 3), crcA >>> 0) ^ crcB) >>> 0;
}
