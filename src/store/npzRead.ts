/**
 * Reads .npz archives (a run's `activations.npz`, or any `np.savez` output) one entry at a time:
 * opening reads only the end records and the central directory; each array is located, checked
 * and read on demand with positional reads. Nothing is ever unpickled: object arrays are refused.
 *
 * What this file owns:
 *
 * - the ZIP side: end of central directory (ZIP64 aware), central directory, local headers. Only
 *   *stored* (uncompressed) entries are read, which is what our writer (`npz.ts`) and `np.savez`
 *   produce. Sizes, CRC and offsets come from the central directory, never from the local header
 *   (np.savez puts ZIP64 placeholders there, our writer a padding extra field), whose name is only
 *   checked against the directory's;
 * - the `.npy` header (v1, v2, v3) with a strict parser of the Python dict literal it holds;
 * - reordering Fortran-order data to C order, so {@link NpzReader.read} always hands out C order.
 */

import { constants as bufferConstants } from "node:buffer";
import { constants as fsConstants, promises as fsp } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import zlib from "node:zlib";
import { EXIT, TorchlensError } from "../errors.js";

/** A .npz that can't be read as asked (missing, damaged, compressed, unknown key); exit code 2. */
export class NpzReadError extends TorchlensError {
  override name = "NpzReadError";
  constructor(message: string, hint?: string) {
    super(message, { hint, exitCode: EXIT.usage });
  }
}

/** Where one array lives in the archive and what it holds. */
export interface NpyInfo {
  /** The npz key: the entry name without ".npy". */
  key: string;
  /** numpy dtype string, e.g. "<f4", "|b1". */
  descr: string;
  shape: number[];
  /** The data on disk is in Fortran order ({@link NpzReader.read} still returns C order). */
  fortranOrder: boolean;
  /** absolute offset of the raw data in the archive */
  dataOffset: number;
  dataBytes: number;
  /** absolute offset and length of the whole .npy file (header + data) */
  npyOffset: number;
  npyBytes: number;
  /** CRC-32 of the whole .npy file, as the central directory records it. */
  crc32: number;
}

/** One central directory record, as much of it as reading needs. */
interface DirEntry {
  name: string;
  nameRaw: Buffer;
  key: string;
  flags: number;
  method: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const LOCAL_FIXED = 30;
const CENTRAL_FIXED = 46;
const EOCD_SIZE = 22;
const EOCD64_SIZE = 56;
const EOCD64_LOCATOR_SIZE = 20;
const MAX_COMMENT = 0xffff;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;
const FLAG_ENCRYPTED = 0x1;
const FLAG_UTF8 = 0x800;
const NPY_MAGIC = Buffer.from("\x93NUMPY", "latin1");
/** Largest .npy header we parse; numpy writes headers of a few hundred bytes. */
const MAX_NPY_HEADER = 16 << 20;
/** Chunk size of streamed reads (verify, npyStream, read). */
const CHUNK_BYTES = 1 << 20;
const MAX_CLOSE_KEYS = 5;

const METHOD_NAMES: Record<number, string> = {
  8: "deflate",
  9: "deflate64",
  12: "bzip2",
  14: "lzma",
  93: "zstd",
  95: "xz",
};

/**
 * A read-only view of one .npz file. Open with {@link NpzReader.open}; every method reads what it
 * needs from disk, so any number of arrays of any total size can be looked at with bounded memory.
 */
export class NpzReader {
  private readonly byKey: Map<string, DirEntry>;
  private readonly infos = new Map<string, NpyInfo>();
  private closed = false;

  private constructor(
    private readonly fh: FileHandle,
    /** The archive's path, as given to {@link open}. */
    readonly path: string,
    private readonly fileName: string,
    private readonly entries: DirEntry[],
    /** Where the central directory starts: entry data must end before it. */
    private readonly dataEnd: number,
  ) {
    this.byKey = new Map(entries.map((e) => [e.key, e]));
  }

  /** Opens `path` and reads its end of central directory (ZIP64 aware) and central directory. */
  static async open(file: string): Promise<NpzReader> {
    const fileName = path.basename(file);
    let fh: FileHandle;
    try {
      fh = await fsp.open(file, fsConstants.O_RDONLY);
    } catch (err) {
      throw openError(err, file);
    }
    try {
      const { size } = await fh.stat();
      const entries = await readDirectory(fh, size, fileName);
      return new NpzReader(fh, file, fileName, entries.list, entries.cdOffset);
    } catch (err) {
      await fh.close().catch(() => {});
      if (err instanceof TorchlensError) throw err;
      throw openError(err, file);
    }
  }

  /** The npz keys (entry names without ".npy"), in archive order. */
  keys(): string[] {
    return this.entries.map((e) => e.key);
  }

  has(key: string): boolean {
    return this.byKey.has(key);
  }

  /** Reads the entry's local header and .npy header. */
  async info(key: string): Promise<NpyInfo> {
    const cached = this.infos.get(key);
    if (cached) return cached;
    const entry = this.entry(key);
    const npyOffset = await this.locate(entry);
    const npyBytes = entry.size;

    const lead = await this.readAt(npyOffset, Math.min(npyBytes, 12), entry);
    if (lead.length < 10 || !lead.subarray(0, 6).equals(NPY_MAGIC)) {
      throw new NpzReadError(
        `entry "${entry.name}" of ${this.fileName} is not a .npy file (no NUMPY magic)`,
        "only arrays saved with numpy (np.save / np.savez) or torchlens can be read",
      );
    }
    const major = lead[6] as number;
    if (major < 1 || major > 3) {
      throw new NpzReadError(
        `entry "${entry.name}" of ${this.fileName} uses .npy format ${major}.${lead[7]}, which this version of torchlens can't read (it knows 1.0, 2.0 and 3.0)`,
      );
    }
    const prefix = major === 1 ? 10 : 12;
    if (lead.length < prefix) throw this.damaged(`the .npy header of "${entry.name}" is cut short`);
    const headerLen = major === 1 ? lead.readUInt16LE(8) : lead.readUInt32LE(8);
    if (headerLen > MAX_NPY_HEADER || prefix + headerLen > npyBytes) {
      throw this.damaged(`the .npy header of "${entry.name}" claims ${headerLen} bytes`);
    }
    const headerBytes = await this.readAt(npyOffset + prefix, headerLen, entry);
    const text = headerBytes.toString(major === 3 ? "utf8" : "latin1");
    let header: NpyHeader;
    try {
      header = parseNpyHeader(text);
    } catch (err) {
      if (!(err instanceof HeaderSyntaxError)) throw err;
      throw this.damaged(`the .npy header of "${entry.name}" can't be parsed: ${err.message}`);
    }
    if (/^[<>|=]?O/.test(header.descr)) {
      throw new NpzReadError(
        `entry "${entry.name}" of ${this.fileName} holds Python objects (dtype ${header.descr}); torchlens never unpickles data`,
        "save numeric arrays only",
      );
    }

    const dataOffset = npyOffset + prefix + headerLen;
    const dataBytes = npyBytes - prefix - headerLen;
    const itemsize = itemSizeOf(header.descr);
    if (itemsize !== null) {
      const expected = header.shape.reduce((a, b) => a * b, 1) * itemsize;
      if (expected !== dataBytes) {
        throw this.damaged(
          `"${entry.name}" has shape (${header.shape.join(", ")}) of ${header.descr}, which needs ${expected} bytes, but the entry holds ${dataBytes}`,
        );
      }
    }
    const info: NpyInfo = {
      key,
      descr: header.descr,
      shape: header.shape,
      fortranOrder: header.fortranOrder,
      dataOffset,
      dataBytes,
      npyOffset,
      npyBytes,
      crc32: entry.crc32,
    };
    this.infos.set(key, info);
    return info;
  }

  /**
   * The array's raw bytes in C order (Fortran-order data is reordered). The buffer is its own
   * allocation, so typed-array views over it are always aligned.
   */
  async read(key: string): Promise<{ info: NpyInfo; data: Buffer }> {
    const info = await this.info(key);
    const entry = this.entry(key);
    if (info.dataBytes > bufferConstants.MAX_LENGTH) {
      throw new NpzReadError(
        `array "${key}" is ${info.dataBytes} bytes, more than one buffer can hold in this Node (${bufferConstants.MAX_LENGTH})`,
        "stream it instead (show --npy)",
      );
    }
    const raw = await this.readAt(info.dataOffset, info.dataBytes, entry, true);
    if (!info.fortranOrder) return { info, data: raw };
    const itemsize = itemSizeOf(info.descr);
    if (itemsize === null) {
      throw new NpzReadError(
        `array "${key}" is stored in Fortran order with dtype ${info.descr}, which torchlens can't reorder`,
      );
    }
    return { info, data: fortranToC(raw, info.shape, itemsize) };
  }

  /** True when the CRC-32 of the stored .npy bytes matches the central directory's. */
  async verify(key: string): Promise<boolean> {
    if (typeof zlib.crc32 !== "function") {
      throw new NpzReadError(
        `checking .npz CRCs needs Node 20.15 or newer (zlib.crc32); this is Node ${process.versions.node}`,
      );
    }
    const entry = this.entry(key);
    const start = await this.locate(entry);
    let crc = 0;
    for await (const chunk of this.chunks(entry, start, entry.size)) crc = zlib.crc32(chunk, crc);
    return crc >>> 0 === entry.crc32;
  }

  /**
   * The whole .npy file of `key` (header and data, as stored), streamed in chunks: what
   * `show --npy` pipes to stdout, loadable by `np.load`. Errors arrive as the stream's 'error'.
   */
  npyStream(key: string): NodeJS.ReadableStream {
    const self = this;
    async function* generate(): AsyncGenerator<Buffer> {
      const entry = self.entry(key);
      const start = await self.locate(entry);
      yield* self.chunks(entry, start, entry.size);
    }
    return Readable.from(generate(), { objectMode: false });
  }

  /** Closes the file; later calls throw. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  /** The directory entry of `key`, or a "no such array" error naming close keys. */
  private entry(key: string): DirEntry {
    if (this.closed) throw new NpzReadError(`the reader of ${this.path} is already closed`);
    const e = this.byKey.get(key);
    if (e) return e;
    const near = closeKeys(key, this.keys(), MAX_CLOSE_KEYS);
    const count = this.entries.length;
    throw new NpzReadError(
      `no array "${key}" in ${this.fileName}` +
        (near.length > 0
          ? `; close keys: ${near.join(", ")}`
          : ` (it holds ${count} ${count === 1 ? "array" : "arrays"})`),
      "list the saved arrays with `torchlens ls`",
    );
  }

  /** Checks the entry's local header and returns where its .npy bytes start. */
  private async locate(e: DirEntry): Promise<number> {
    if (e.flags & FLAG_ENCRYPTED) {
      throw new NpzReadError(
        `entry "${e.name}" of ${this.fileName} is encrypted; torchlens can't read it`,
      );
    }
    if (e.method !== 0) {
      const how = METHOD_NAMES[e.method] ?? `method ${e.method}`;
      throw new NpzReadError(
        `entry "${e.name}" of ${this.fileName} is compressed (${how}); torchlens reads only stored (uncompressed) entries`,
        "save with np.savez rather than np.savez_compressed, or re-run extract",
      );
    }
    const h = await this.readAt(e.localOffset, LOCAL_FIXED, e);
    if (h.readUInt32LE(0) !== SIG_LOCAL) {
      throw this.damaged(`no local header where the directory puts "${e.name}"`);
    }
    const nameLen = h.readUInt16LE(26);
    const extraLen = h.readUInt16LE(28);
    const localName = await this.readAt(e.localOffset + LOCAL_FIXED, nameLen, e);
    if (!localName.equals(e.nameRaw)) {
      throw this.damaged(
        `entry "${e.name}" is named "${decodeName(localName, h.readUInt16LE(6))}" in its local header`,
      );
    }
    const start = e.localOffset + LOCAL_FIXED + nameLen + extraLen;
    if (start + e.size > this.dataEnd) {
      throw this.damaged(`entry "${e.name}" runs past the start of the central directory`);
    }
    return start;
  }

  /**
   * Reads exactly `len` bytes at `pos`. `own` asks for an unpooled buffer (offset 0 in its own
   * ArrayBuffer) for data handed to callers.
   */
  private async readAt(pos: number, len: number, e: DirEntry, own = false): Promise<Buffer> {
    const buf = own ? Buffer.allocUnsafeSlow(len) : Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await this.fh.read(buf, got, Math.min(len - got, 1 << 30), pos + got);
      if (bytesRead === 0) throw this.damaged(`the file ends inside entry "${e.name}"`);
      got += bytesRead;
    }
    return buf;
  }

  /** `len` bytes from `pos` in fresh chunks of up to {@link CHUNK_BYTES}. */
  private async *chunks(e: DirEntry, pos: number, len: number): AsyncGenerator<Buffer> {
    for (let at = 0; at < len; at += CHUNK_BYTES) {
      yield await this.readAt(pos + at, Math.min(CHUNK_BYTES, len - at), e);
    }
  }

  private damaged(what: string): NpzReadError {
    return damagedError(this.fileName, what);
  }
}

function damagedError(fileName: string, what: string): NpzReadError {
  return new NpzReadError(
    `${fileName} is damaged: ${what} — re-run extract`,
    "the run was probably interrupted or the file was cut short; `torchlens extract` writes it again",
  );
}

function openError(err: unknown, file: string): NpzReadError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") {
    return new NpzReadError(
      `${file} does not exist`,
      "run `torchlens extract` first, or check the run directory",
    );
  }
  if (code === "EISDIR") return new NpzReadError(`${file} is a directory, not an .npz file`);
  if (code === "EACCES" || code === "EPERM")
    return new NpzReadError(`${file} can't be read: permission denied`);
  return new NpzReadError(`${file} can't be read: ${(err as Error).message}`);
}

/** Finds the end records and parses the central directory. */
async function readDirectory(
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

  const cd = await readAt(cdOffset, cdSize);
  const list: DirEntry[] = [];
  const names = new Set<string>();
  let p = 0;
  while (p < cd.length) {
    if (p + CENTRAL_FIXED > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) {
      throw damaged(`the central directory is broken after ${list.length} entries`);
    }
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const crc32 = cd.readUInt32LE(p + 16);
    let compressedSize = cd.readUInt32LE(p + 20);
    let entrySize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let disk = cd.readUInt16LE(p + 34);
    let localOffset = cd.readUInt32LE(p + 42);
    const end = p + CENTRAL_FIXED + nameLen + extraLen + commentLen;
    if (end > cd.length)
      throw damaged(`the central directory is broken after ${list.length} entries`);
    const nameRaw = Buffer.from(cd.subarray(p + CENTRAL_FIXED, p + CENTRAL_FIXED + nameLen));
    const name = decodeName(nameRaw, flags);

    // ZIP64 extra: only the fields whose fixed slot is saturated, in this order.
    let x = p + CENTRAL_FIXED + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
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
        if (entrySize === U32_MAX) entrySize = take();
        if (compressedSize === U32_MAX) compressedSize = take();
        if (localOffset === U32_MAX) localOffset = take();
        if (disk === U16_MAX && q + 4 <= x + 4 + len) disk = cd.readUInt32LE(q);
      }
      x += 4 + len;
    }
    if (disk !== 0) throw damaged(`entry "${name}" claims to be on another disk`);
    checkName(name, fileName);
    if (method === 0 && compressedSize !== entrySize) {
      throw damaged(`stored entry "${name}" has different compressed and uncompressed sizes`);
    }
    if (localOffset + LOCAL_FIXED > cdOffset || localOffset + compressedSize > cdOffset) {
      throw damaged(`entry "${name}" lies past the start of the central directory`);
    }
    const key = name.endsWith(".npy") ? name.slice(0, -4) : name;
    if (names.has(key)) throw damaged(`two entries are named "${key}"`);
    names.add(key);
    list.push({
      name,
      nameRaw,
      key,
      flags,
      method,
      crc32,
      compressedSize,
      size: entrySize,
      localOffset,
    });
    p = end;
  }
  if (list.length !== count) {
    throw damaged(
      `the end record counts ${count} entries, the central directory holds ${list.length}`,
    );
  }
  return { list, cdOffset };
}

function u64(buf: Buffer, at: number, damaged: (what: string) => NpzReadError): number {
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

function decodeName(raw: Buffer, flags: number): string {
  if (flags & FLAG_UTF8) return raw.toString("utf8");
  let s = "";
  for (const b of raw) s += b < 0x80 ? String.fromCharCode(b) : CP437_HIGH[b - 0x80];
  return s;
}

/** Bytes per element for plain dtype strings ("<f4", "|b1", "<U3", "<M8[ns]"); null when unknown. */
function itemSizeOf(descr: string): number | null {
  const m = /^[<>|=]?([a-zA-Z])(\d+)(\[\w+\])?$/.exec(descr);
  if (!m) return null;
  const n = Number(m[2]);
  return m[1] === "U" ? 4 * n : n;
}

/** Reorders Fortran-order bytes to C order (a copy). */
function fortranToC(src: Buffer, shape: number[], itemsize: number): Buffer {
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

/** Up to `max` keys near `key`: by edit distance, or containing / contained in it. */
export function closeKeys(key: string, keys: string[], max: number): string[] {
  const limit = Math.max(2, Math.floor(key.length / 3));
  const scored: [number, number, string][] = [];
  keys.forEach((k, i) => {
    const contains = k.length > 0 && key.length > 0 && (k.includes(key) || key.includes(k));
    const d = editDistance(key, k, limit);
    if (d <= limit) scored.push([d, i, k]);
    else if (contains) scored.push([limit + 1, i, k]);
  });
  scored.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return scored.slice(0, max).map((s) => s[2]);
}

/** Levenshtein distance, or `limit + 1` as soon as it must exceed `limit`. */
function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  let cur = new Array<number>(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1;
      const v = Math.min(
        (prev[j] as number) + 1,
        (cur[j - 1] as number) + 1,
        (prev[j - 1] as number) + cost,
      );
      cur[j] = v;
      if (v < rowMin) rowMin = v;
    }
    if (rowMin > limit) return limit + 1;
    [prev, cur] = [cur, prev];
  }
  return prev[b.length] as number;
}

// ---------------------------------------------------------------------------------------------
// .npy header: a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// parsed by a small strict recursive-descent parser (no eval): strings, integers, True/False/None,
// tuples, lists and dicts, nothing else.

interface NpyHeader {
  descr: string;
  fortranOrder: boolean;
  shape: number[];
}

class HeaderSyntaxError extends Error {}

type PyValue = string | number | boolean | null | PyTuple | PyValue[] | PyDict;
class PyTuple {
  constructor(readonly items: PyValue[]) {}
}
class PyDict {
  constructor(readonly entries: [PyValue, PyValue][]) {}
}

/** Parses and checks the header dict; throws {@link HeaderSyntaxError} on anything unexpected. */
export function parseNpyHeader(text: string): NpyHeader {
  const p = new LiteralParser(text);
  const value = p.value();
  p.end();
  if (!(value instanceof PyDict)) throw new HeaderSyntaxError("it is not a dict");
  const fields = new Map<string, PyValue>();
  for (const [k, v] of value.entries) {
    if (typeof k !== "string") throw new HeaderSyntaxError("a key is not a string");
    if (fields.has(k)) throw new HeaderSyntaxError(`key '${k}' appears twice`);
    fields.set(k, v);
  }
  const names = [...fields.keys()].sort().join(", ");
  if (names !== "descr, fortran_order, shape") {
    throw new HeaderSyntaxError(
      `expected keys descr, fortran_order, shape; got ${names || "none"}`,
    );
  }
  const descr = fields.get("descr");
  const fortranOrder = fields.get("fortran_order");
  const shape = fields.get("shape");
  if (typeof descr !== "string") {
    throw new HeaderSyntaxError(
      "descr is not a plain dtype string (structured dtypes are not supported)",
    );
  }
  if (typeof fortranOrder !== "boolean")
    throw new HeaderSyntaxError("fortran_order is not True or False");
  if (!(shape instanceof PyTuple)) throw new HeaderSyntaxError("shape is not a tuple");
  const dims = shape.items.map((d) => {
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      throw new HeaderSyntaxError("shape holds something other than non-negative integers");
    }
    return d;
  });
  return { descr, fortranOrder, shape: dims };
}

class LiteralParser {
  private i = 0;
  constructor(private readonly s: string) {}

  end(): void {
    this.ws();
    if (this.i !== this.s.length) this.fail("unexpected text after the dict");
  }

  value(depth = 0): PyValue {
    if (depth > 32) this.fail("nested too deeply");
    this.ws();
    const c = this.s[this.i];
    if (c === "{") return this.dict(depth);
    if (c === "(") return this.tuple(depth);
    if (c === "[") return this.list(depth);
    if (c === "'" || c === '"') return this.string();
    if (c === "u" && (this.s[this.i + 1] === "'" || this.s[this.i + 1] === '"')) {
      this.i++;
      return this.string();
    }
    if (c !== undefined && /[-+0-9]/.test(c)) return this.int();
    for (const [word, v] of [
      ["True", true],
      ["False", false],
      ["None", null],
    ] as const) {
      if (this.s.startsWith(word, this.i) && !/\w/.test(this.s[this.i + word.length] ?? "")) {
        this.i += word.length;
        return v;
      }
    }
    return this.fail(c === undefined ? "unexpected end" : `unexpected ${JSON.stringify(c)}`);
  }

  private dict(depth: number): PyDict {
    this.i++;
    const entries: [PyValue, PyValue][] = [];
    for (;;) {
      this.ws();
      if (this.eat("}")) return new PyDict(entries);
      const k = this.value(depth + 1);
      this.ws();
      if (!this.eat(":")) this.fail("expected ':'");
      entries.push([k, this.value(depth + 1)]);
      this.ws();
      if (this.eat("}")) return new PyDict(entries);
      if (!this.eat(",")) this.fail("expected ',' or '}'");
    }
  }

  private list(depth: number): PyValue[] {
    this.i++;
    const items: PyValue[] = [];
    for (;;) {
      this.ws();
      if (this.eat("]")) return items;
      items.push(this.value(depth + 1));
      this.ws();
      if (this.eat("]")) return items;
      if (!this.eat(",")) this.fail("expected ',' or ']'");
    }
  }

  /** `()`, `(x,)`, `(x, y)`, `(x, y,)`; `(x)` is just x, as in Python. */
  private tuple(depth: number): PyValue {
    this.i++;
    const items: PyValue[] = [];
    let comma = false;
    for (;;) {
      this.ws();
      if (this.eat(")")) break;
      items.push(this.value(depth + 1));
      this.ws();
      if (this.eat(")")) break;
      if (!this.eat(",")) this.fail("expected ',' or ')'");
      comma = true;
    }
    if (items.length === 1 && !comma) return items[0] as PyValue;
    return new PyTuple(items);
  }

  private string(): string {
    const q = this.s[this.i++];
    let out = "";
    for (;;) {
      const c = this.s[this.i++];
      if (c === undefined || c === "\n") this.fail("unterminated string");
      if (c === q) return out;
      if (c !== "\\") {
        out += c;
        continue;
      }
      const e = this.s[this.i++];
      const simple: Record<string, string> = {
        "\\": "\\",
        "'": "'",
        '"': '"',
        n: "\n",
        t: "\t",
        r: "\r",
        "0": "\0",
      };
      if (e !== undefined && e in simple) out += simple[e];
      else if (e === "x" || e === "u") {
        const n = e === "x" ? 2 : 4;
        const hex = this.s.slice(this.i, this.i + n);
        if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) this.fail("bad escape in string");
        out += String.fromCharCode(Number.parseInt(hex, 16));
        this.i += n;
      } else this.fail("bad escape in string");
    }
  }

  /** A decimal integer; Python 2's `L` suffix (old numpy headers) is accepted. */
  private int(): number {
    const m = /^[-+]?[0-9]+L?/.exec(this.s.slice(this.i, this.i + 40));
    if (!m || /[.eE_]/.test(this.s[this.i + m[0].length] ?? "")) this.fail("expected an integer");
    const digits = (m as RegExpExecArray)[0].replace(/L$/, "");
    this.i += (m as RegExpExecArray)[0].length;
    const v = Number(digits);
    if (!Number.isSafeInteger(v)) this.fail(`integer ${digits} is out of range`);
    return v;
  }

  private ws(): void {
    while (this.i < this.s.length && /[ \t\n\r]/.test(this.s[this.i] as string)) this.i++;
  }

  private eat(c: string): boolean {
    if (this.s[this.i] !== c) return false;
    this.i++;
    return true;
  }

  private fail(why: string): never {
    throw new HeaderSyntaxError(`${why} at character ${this.i}`);
  }
}
