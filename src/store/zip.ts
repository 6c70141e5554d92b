/**
 * The ZIP layout both sides of the npz share (record signatures and fixed sizes, {@link ZIP}),
 * and the ZIP side of reading: the end of central directory (ZIP64 aware), the central
 * directory and entry names. Sizes, CRC and offsets come from the central directory, never from
 * a local header (np.savez puts ZIP64 placeholders there, our writer a padding extra field).
 * Names that would escape a directory are refused.
 */
import { constants as bufferConstants } from "node:buffer";
import type { FileHandle } from "node:fs/promises";
import { damagedError, NpzReadError } from "./npzErrors.js";

/** One central directory record, as much of it as reading needs. */
export interface DirEntry {
  name: string;
  nameRaw: Buffer;
  /** The npz key: the name without ".npy". */
  key: string;
  flags: number;
  method: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

/**
 * The ZIP records' signatures and fixed sizes (PKWARE's APPNOTE), and the saturated values that
 * say "see the ZIP64 field": one table for the writer (npz.ts) and the reader.
 */
export const ZIP = {
  SIG_LOCAL: 0x04034b50,
  SIG_CENTRAL: 0x02014b50,
  SIG_EOCD: 0x06054b50,
  SIG_EOCD64: 0x06064b50,
  SIG_EOCD64_LOCATOR: 0x07064b50,
  LOCAL_FIXED: 30,
  CENTRAL_FIXED: 46,
  EOCD_SIZE: 22,
  EOCD64_SIZE: 56,
  EOCD64_LOCATOR_SIZE: 20,
  U16_MAX: 0xffff,
  U32_MAX: 0xffffffff,
} as const;

const {
  SIG_CENTRAL,
  SIG_EOCD,
  SIG_EOCD64,
  SIG_EOCD64_LOCATOR,
  LOCAL_FIXED,
  CENTRAL_FIXED,
  EOCD_SIZE,
  EOCD64_SIZE,
  EOCD64_LOCATOR_SIZE,
  U16_MAX,
  U32_MAX,
} = ZIP;
const MAX_COMMENT = 0xffff;
export const FLAG_ENCRYPTED = 0x1;
const FLAG_UTF8 = 0x800;

/** Compression methods by number, for saying which one an entry uses. */
export const METHOD_NAMES: Record<number, string> = {
  8: "deflate",
  9: "deflate64",
  12: "bzip2",
  14: "lzma",
  93: "zstd",
  95: "xz",
};

type Damaged = (what: string) => NpzReadError;

/** Finds the end records and parses the central directory of the archive open as `fh`. */
export async function readDirectory(
  fh: FileHandle,
  size: number,
  fileName: string,
): Promise<{ list: DirEntry[]; cdOffset: number }> {
  const damaged = (what: string) => damagedError(fileName, what);
  const readAt = async (pos: number, len: number): Promise<Buffer> => {
    const buf = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await fh.read(buf, got, len - got, pos + got);
      if (bytesRead === 0) throw damaged("the file ends early");
      got += bytesRead;
    }
    return buf;
  };
  const { count, cdSize, cdOffset } = await readEndRecords(size, readAt, damaged);
  const cd = await readAt(cdOffset, cdSize);
  const list: DirEntry[] = [];
  const names = new Set<string>();
  for (let p = 0; p < cd.length; ) {
    const { entry, end } = parseRecord(cd, p, list.length, cdOffset, fileName, damaged);
    if (names.has(entry.key)) throw damaged(`two entries are named "${entry.key}"`);
    names.add(entry.key);
    list.push(entry);
    p = end;
  }
  if (list.length !== count) {
    throw damaged(
      `the end record counts ${count} entries, the central directory holds ${list.length}`,
    );
  }
  return { list, cdOffset };
}

/** The entry count and where the central directory lies, from the end record (and ZIP64's). */
async function readEndRecords(
  size: number,
  readAt: (pos: number, len: number) => Promise<Buffer>,
  damaged: Damaged,
): Promise<{ count: number; cdSize: number; cdOffset: number }> {
  if (size < EOCD_SIZE) throw damaged(`it is ${size} bytes, too short to be a zip archive`);
  const tailLen = Math.min(size, EOCD_SIZE + MAX_COMMENT + EOCD64_LOCATOR_SIZE);
  const tailStart = size - tailLen;
  const tail = await readAt(tailStart, tailLen);
  // The end record is the last signature whose comment length reaches exactly the end of the file.
  let eocd = -1;
  for (let i = tailLen - EOCD_SIZE; i >= 0; i--) {
    if (
      tail.readUInt32LE(i) === SIG_EOCD &&
      i + EOCD_SIZE + tail.readUInt16LE(i + 20) === tailLen
    ) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw damaged("no zip end record (the file is cut short or is not a zip archive)");
  if (tail.readUInt16LE(eocd + 4) !== 0 || tail.readUInt16LE(eocd + 6) !== 0) {
    throw damaged("it claims to span several disks");
  }
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  /** The first byte after the central directory: the ZIP64 end record or the end record. */
  let cdEnd = tailStart + eocd;

  const loc = eocd - EOCD64_LOCATOR_SIZE;
  if (loc >= 0 && tail.readUInt32LE(loc) === SIG_EOCD64_LOCATOR) {
    const at = u64(tail, loc + 8, damaged);
    if (at + EOCD64_SIZE > tailStart + loc)
      throw damaged("the ZIP64 end record lies outside the file");
    const z = await readAt(at, EOCD64_SIZE);
    if (z.readUInt32LE(0) !== SIG_EOCD64)
      throw damaged("no ZIP64 end record where its locator points");
    count = u64(z, 32, damaged);
    cdSize = u64(z, 40, damaged);
    cdOffset = u64(z, 48, damaged);
    cdEnd = at;
  } else if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
    throw damaged("the zip end record needs a ZIP64 record that is missing");
  }
  if (cdOffset + cdSize !== cdEnd) {
    throw damaged(
      `the central directory (offset ${cdOffset}, ${cdSize} bytes) does not end where the end record starts (${cdEnd})`,
    );
  }
  if (cdSize > bufferConstants.MAX_LENGTH)
    throw damaged(`the central directory claims ${cdSize} bytes`);
  return { count, cdSize, cdOffset };
}

/** The central directory record at `p` (the `index`-th), checked, and where the next one starts. */
function parseRecord(
  cd: Buffer,
  p: number,
  index: number,
  cdOffset: number,
  fileName: string,
  damaged: Damaged,
): { entry: DirEntry; end: number } {
  if (p + CENTRAL_FIXED > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) {
    throw damaged(`the central directory is broken after ${index} entries`);
  }
  const flags = cd.readUInt16LE(p + 8);
  const method = cd.readUInt16LE(p + 10);
  const crc32 = cd.readUInt32LE(p + 16);
  const nameLen = cd.readUInt16LE(p + 28);
  const extraLen = cd.readUInt16LE(p + 30);
  const commentLen = cd.readUInt16LE(p + 32);
  const end = p + CENTRAL_FIXED + nameLen + extraLen + commentLen;
  if (end > cd.length) throw damaged(`the central directory is broken after ${index} entries`);
  const nameRaw = Buffer.from(cd.subarray(p + CENTRAL_FIXED, p + CENTRAL_FIXED + nameLen));
  const name = decodeName(nameRaw, flags);
  const sizes = {
    size: cd.readUInt32LE(p + 24),
    compressedSize: cd.readUInt32LE(p + 20),
    localOffset: cd.readUInt32LE(p + 42),
    disk: cd.readUInt16LE(p + 34),
  };
  readZip64Extra(cd, p + CENTRAL_FIXED + nameLen, extraLen, name, sizes, damaged);
  const { size, compressedSize, localOffset, disk } = sizes;
  if (disk !== 0) throw damaged(`entry "${name}" claims to be on another disk`);
  checkName(name, fileName);
  if (method === 0 && compressedSize !== size) {
    throw damaged(`stored entry "${name}" has different compressed and uncompressed sizes`);
  }
  if (localOffset + LOCAL_FIXED > cdOffset || localOffset + compressedSize > cdOffset) {
    throw damaged(`entry "${name}" lies past the start of the central directory`);
  }
  const key = name.endsWith(".npy") ? name.slice(0, -4) : name;
  const entry = { name, nameRaw, key, flags, method, crc32, compressedSize, size, localOffset };
  return { entry, end };
}

/**
 * Replaces the saturated fixed-size fields of `sizes` by their values in the ZIP64 extra field
 * (only the saturated ones are there, in this order), if the record has one.
 */
function readZip64Extra(
  cd: Buffer,
  start: number,
  length: number,
  name: string,
  sizes: { size: number; compressedSize: number; localOffset: number; disk: number },
  damaged: Damaged,
): void {
  const xEnd = start + length;
  for (let x = start; x + 4 <= xEnd; ) {
    const id = cd.readUInt16LE(x);
    const len = cd.readUInt16LE(x + 2);
    if (x + 4 + len > xEnd) throw damaged(`the extra field of "${name}" is broken`);
    if (id === 0x0001) {
      let q = x + 4;
      const take = (): number => {
        if (q + 8 > x + 4 + len) throw damaged(`the ZIP64 field of "${name}" is too short`);
        const v = u64(cd, q, damaged);
        q += 8;
        return v;
      };
      if (sizes.size === U32_MAX) sizes.size = take();
      if (sizes.compressedSize === U32_MAX) sizes.compressedSize = take();
      if (sizes.localOffset === U32_MAX) sizes.localOffset = take();
      if (sizes.disk === U16_MAX && q + 4 <= x + 4 + len) sizes.disk = cd.readUInt32LE(q);
    }
    x += 4 + len;
  }
}

function u64(buf: Buffer, at: number, damaged: Damaged): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER))
    throw damaged(`a ZIP64 size or offset is impossibly large (${v})`);
  return Number(v);
}

/** Refuses entry names that would escape a directory if someone extracted the archive. */
function checkName(name: string, fileName: string): void {
  const refuse = (why: string) =>
    new NpzReadError(
      `${fileName} holds an entry named ${JSON.stringify(name)}, which ${why}; refusing to read it`,
      "this archive was not written by torchlens or numpy.savez; don't trust it",
    );
  if (name.length === 0) throw refuse("is empty");
  if (name.includes("\0")) throw refuse("contains a NUL character");
  if (/^[/\\]/.test(name) || /^[A-Za-z]:/.test(name)) throw refuse("is an absolute path");
  if (name.split(/[/\\]/).includes("..")) throw refuse('climbs out of its directory with ".."');
}

/** CP437's upper half: what zip names without the UTF-8 flag mean (as Python's zipfile reads them). */
const CP437_HIGH =
  "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0";

/** An entry name as text: UTF-8 when its flag says so, else CP437. */
export function decodeName(raw: Buffer, flags: number): string {
  if (flags & FLAG_UTF8) return raw.toString("utf8");
  let s = "";
  for (const b of raw) s += b < 0x80 ? String.fromCharCode(b) : CP437_HIGH[b - 0x80];
  return s;
}
