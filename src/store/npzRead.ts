/**
 * Reads .npz archives (a run's `activations.npz`, or any `np.savez` output) one entry at a time:
 * opening reads only the end records and the central directory (zip.ts); each array is located,
 * checked and read on demand with positional reads. Only *stored* (uncompressed) entries are
 * read, which is what our writer (`npz.ts`) and `np.savez` produce. Nothing is ever unpickled:
 * object arrays are refused. The .npy header is parsed strictly (npy.ts), and Fortran-order data
 * is reordered, so {@link NpzReader.read} always hands out C order.
 */

import { constants as bufferConstants } from "node:buffer";
import { constants as fsConstants, promises as fsp } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import zlib from "node:zlib";
import { TorchlensError } from "../errors.js";
import { numpyBytes, numpyItemSize } from "../log/dtypes.js";
import { closeMatches, KEY_CLOSENESS } from "../util/suggest.js";
import { plural } from "../util/text.js";
import { fortranToC, MAX_NPY_HEADER, NPY_MAGIC, type NpyHeader, parseNpyHeader } from "./npy.js";
import { damagedError, NpzReadError, openError } from "./npzErrors.js";
import { LiteralError } from "./pyLiteral.js";
import {
  type DirEntry,
  decodeName,
  FLAG_ENCRYPTED,
  METHOD_NAMES,
  readDirectory,
  ZIP,
} from "./zip.js";

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

const { LOCAL_FIXED, SIG_LOCAL } = ZIP;
/** Chunk size of streamed reads (verify, npyStream, read). */
const CHUNK_BYTES = 1 << 20;
const MAX_CLOSE_KEYS = 5;

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
    const { header, headerBytes } = await this.npyHeader(entry, npyOffset);
    const dataOffset = npyOffset + headerBytes;
    const dataBytes = npyBytes - headerBytes;
    const expected = numpyBytes(header.descr, header.shape);
    if (expected !== null && expected !== dataBytes) {
      throw this.damaged(
        `"${entry.name}" has shape (${header.shape.join(", ")}) of ${header.descr}, which needs ${expected} bytes, but the entry holds ${dataBytes}`,
      );
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
    const itemsize = numpyItemSize(info.descr);
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
    const near = closeMatches(key, this.keys(), KEY_CLOSENESS, MAX_CLOSE_KEYS);
    const count = this.entries.length;
    throw new NpzReadError(
      `no array "${key}" in ${this.fileName}` +
        (near.length > 0
          ? `; close keys: ${near.join(", ")}`
          : ` (it holds ${plural(count, "array")})`),
      "list the saved arrays with `torchlens ls`",
    );
  }

  /** The .npy header of `entry` (its .npy bytes start at `npyOffset`), and its size in bytes. */
  private async npyHeader(
    entry: DirEntry,
    npyOffset: number,
  ): Promise<{ header: NpyHeader; headerBytes: number }> {
    const lead = await this.readAt(npyOffset, Math.min(entry.size, 12), entry);
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
    if (headerLen > MAX_NPY_HEADER || prefix + headerLen > entry.size) {
      throw this.damaged(`the .npy header of "${entry.name}" claims ${headerLen} bytes`);
    }
    const bytes = await this.readAt(npyOffset + prefix, headerLen, entry);
    let header: NpyHeader;
    try {
      header = parseNpyHeader(bytes.toString(major === 3 ? "utf8" : "latin1"));
    } catch (err) {
      if (!(err instanceof LiteralError)) throw err;
      throw this.damaged(`the .npy header of "${entry.name}" can't be parsed: ${err.message}`);
    }
    if (/^[<>|=]?O/.test(header.descr)) {
      throw new NpzReadError(
        `entry "${entry.name}" of ${this.fileName} holds Python objects (dtype ${header.descr}); torchlens never unpickles data`,
        "save numeric arrays only",
      );
    }
    return { header, headerBytes: prefix + headerLen };
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
