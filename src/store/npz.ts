/**
 * Streaming .npz writer: a ZIP archive of *stored* (uncompressed) `.npy` entries, written through
 * one file descriptor with positional writes.
 *
 * Why our own: no npm package writes .npz, and the zip packages measured 2-3x slower than
 * this (they copy every buffer) or broke past 4 GiB (fflate). What this file owns:
 *
 * - the `.npy` header ({@link npyHeader}),
 * - the ZIP layout: local header, data, central directory, end records (ZIP64 when sizes or
 *   offsets reach 4 GiB or the entry count reaches 65535),
 * - batching into `writev` calls of up to {@link BATCH_BYTES}: pieces larger than
 *   {@link COPY_MAX_BYTES} are written from the caller's memory, never copied; smaller ones are
 *   copied into a staging buffer, because a write round trip per small piece costs far more than
 *   the copy (and lets many small entries share one writev),
 * - late naming: every local header reserves room for the longest valid key, the unused part
 *   filled by a padding extra field (header id {@link PAD_EXTRA_ID}), so `rename` never moves data.
 *
 * Entry layout on disk:
 *
 *   [local header 30 B][name][ZIP64 extra 20 B, if the entry is >= 4 GiB][padding extra]
 *   [.npy header, a multiple of 64 B][raw C-order data]
 *
 * The padding also aligns the raw data to 64 bytes in the file, so it can be memory-mapped.
 *
 * An entry may also be placed: its data starts at an offset the caller gives (the agent's direct
 * writes, docs/wire.md), the padding growing to fill the room before it. Its bytes then come either
 * through {@link NpzWriter.write} as usual or from another process writing the file itself
 * ({@link NpzWriter.endWritten}); the CRC of those arrives later ({@link NpzWriter.setWrittenCrc}).
 */
import fs, { promises as fsp } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import zlib from "node:zlib";
import { TorchlensError } from "../errors.js";
import { numpyBytes } from "../log/dtypes.js";
import { crc32Combine } from "./crc32.js";
import { ZIP } from "./zip.js";

/** A failure of the npz writer (bad key, wrong byte count, misuse); `message` is meant for the user. */
export class NpzError extends TorchlensError {
  override name = "NpzError";
}

/** Longest final key (the npz key: the zip name without ".npy"). */
export const MAX_KEY_LENGTH = 200;
const KEY_CHARS = /^[A-Za-z0-9_.:-]+$/;
/** Room reserved in every local header for the name. */
const NAME_ROOM = MAX_KEY_LENGTH + ".npy".length;
/** Extra-field header id of the padding field; not assigned in APPNOTE or by known tools. */
export const PAD_EXTRA_ID = 0x6c74; // "tl"
/** Pending pieces are handed to one writev once they reach this many bytes (or IOV_MAX pieces). */
export const BATCH_BYTES = 4 << 20;
const BATCH_PIECES = 1024;
/** Writes in flight before a writer waits: bounds memory (batches are at most BATCH_BYTES). */
const MAX_INFLIGHT = 8;
/** Pieces up to this size are copied into the batch's staging buffer; larger ones never are. */
export const COPY_MAX_BYTES = 64 << 10;
/** A staging buffer never overflows: a batch holds < BATCH_BYTES before the last copy. */
const SLAB_BYTES = BATCH_BYTES + COPY_MAX_BYTES;
const SPARE_SLABS = 2;
const RESOLVED = Promise.resolve();
const EMPTY = Buffer.alloc(0);

const {
  U32_MAX,
  U16_MAX,
  LOCAL_FIXED,
  CENTRAL_FIXED,
  EOCD_SIZE,
  EOCD64_SIZE,
  EOCD64_LOCATOR_SIZE,
  SIG_LOCAL,
  SIG_CENTRAL,
  SIG_EOCD,
  SIG_EOCD64,
  SIG_EOCD64_LOCATOR,
} = ZIP;
const ZIP64_LOCAL_EXTRA = 20; // id, size, uncompressed size, compressed size
const PAD_EXTRA_HEADER = 4;
const VERSION_PLAIN = 20;
const VERSION_ZIP64 = 45;
const MADE_BY_UNIX = 3 << 8;
const FILE_ATTRS = (0o100644 << 16) >>> 0; // regular file, rw-r--r--

export interface NpzWriterOptions {
  /**
   * Sizes and offsets at or above this use ZIP64 fields. Only tests lower it (to reach the ZIP64
   * code paths without writing 4 GiB); the default is the ZIP limit, 0xffffffff.
   * @internal
   */
  zip64Threshold?: number;
  /**
   * The caller never changes a piece after handing it over (pieces read from a pipe are fresh
   * buffers): small pieces are then kept by reference and written with writev, never copied.
   */
  immutablePieces?: boolean;
}

/** One array being written or already written; obtained from {@link NpzWriter.beginEntry}. */
export interface NpzEntry {
  /** The key the entry will have in the npz: the final key once renamed, else the provisional one. */
  readonly key: string;
  readonly descr: string;
  readonly shape: readonly number[];
  /** Bytes of raw data expected. */
  readonly nbytes: number;
}

interface EntryState extends NpzEntry {
  key: string;
  /** Offset of the local header in the file. */
  readonly offset: number;
  /** Bytes of the zip member: .npy header + raw data. */
  readonly size: number;
  /** Name length + extra length of the local header (fixed; renames trade one for the other). */
  readonly room: number;
  readonly zip64Local: boolean;
  /** Where the raw data starts in the file. */
  readonly dataStart: number;
  /**
   * While the entry is open: its local header + reserved name room + .npy header (ours, so it may
   * be patched in place until flushed) and the batch that carries it. Dropped at endEntry, so a
   * finished entry holds no buffers.
   */
  head: Buffer | null;
  headBatch: Batch | null;
  /** Key written in the local header on disk (or in `head`, until flushed). */
  headKey: string;
  written: number;
  crc: number;
  open: boolean;
  /** Data written by someone else whose CRC has not come yet ({@link NpzWriter.setWrittenCrc}). */
  crcPending: boolean;
  /** The local header on disk holds a CRC of 0: rewrite it at close. */
  crcStale: boolean;
  /** Nothing of the headers is in the file yet ({@link NpzWriter.placeWritten}): all at close. */
  headUnwritten: boolean;
}

/** Contiguous pieces waiting for one writev at `pos`; every piece shares the batch's promise. */
interface Batch {
  readonly pos: number;
  /** What the writev gets: caller pieces, headers, and runs of `slab`. */
  readonly iov: Uint8Array[];
  bytes: number;
  /** Staging buffer for copied small pieces; `slab[runStart, slabUsed)` is not in `iov` yet. */
  slab: Buffer | null;
  slabUsed: number;
  runStart: number;
  flushed: boolean;
  readonly done: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Writes an .npz file entry by entry. Only one entry is open at a time; its data arrives in order,
 * in pieces of any size. Pieces over {@link COPY_MAX_BYTES} are written without copying, so a piece
 * must stay untouched until the promise returned by {@link write} resolves.
 *
 * Call {@link close} to finish the file, or {@link abort} to delete it. After a failed write every
 * later call rethrows that failure; `abort` still works.
 */
export class NpzWriter {
  private readonly entries: EntryState[] = [];
  private readonly provisionalKeys = new Set<string>();
  private readonly finalKeys = new Map<string, EntryState>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly dosTime: number;
  private readonly dosDate: number;
  private current: EntryState | null = null;
  private batch: Batch | null = null;
  /** Promise of the most recently flushed batch (backpressure for copied pieces). */
  private lastFlush: Promise<void> = RESOLVED;
  private readonly spareSlabs: Buffer[] = [];
  private readonly npyHeaders = new Map<string, { npy: Buffer; crc: number }>();
  /** End of everything handed out so far: where the next entry (or the directory) starts. */
  private end = 0;
  private failure: unknown = null;
  private finished = false;

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    private readonly zip64Threshold: number,
    private readonly copyMax: number,
  ) {
    [this.dosDate, this.dosTime] = dosDateTime(new Date());
  }

  /**
   * The .npy header for `descr` and `shape`, and its CRC, made once per distinct pair: a model's
   * passes repeat a few shapes, and each entry would otherwise build its header anew while the
   * forward pass runs beside us.
   */
  private npyHeaderOf(descr: string, shape: number[]): { npy: Buffer; crc: number } {
    const key = `${descr}|${shape.join(",")}`;
    let made = this.npyHeaders.get(key);
    if (made === undefined) {
      const npy = npyHeader(descr, shape);
      made = { npy, crc: zlib.crc32(npy) };
      this.npyHeaders.set(key, made);
    }
    return made;
  }

  /** Where the next entry's local header goes: the end of every entry begun so far. */
  get nextOffset(): number {
    return this.end;
  }

  /** Creates (or truncates) the file at `path`. */
  static async create(path: string, options: NpzWriterOptions = {}): Promise<NpzWriter> {
    if (typeof zlib.crc32 !== "function") {
      throw new NpzError(
        `writing .npz needs Node 20.15 or newer (zlib.crc32); this is Node ${process.versions.node}`,
      );
    }
    const threshold = options.zip64Threshold ?? U32_MAX;
    if (!Number.isInteger(threshold) || threshold < 1 || threshold > U32_MAX) {
      throw new NpzError(`zip64Threshold must be an integer in 1..${U32_MAX}`);
    }
    const fh = await fsp.open(path, "w");
    return new NpzWriter(fh, path, threshold, options.immutablePieces ? 0 : COPY_MAX_BYTES);
  }

  /**
   * Starts an entry: queues its local header (under `provisionalKey`, with room reserved for any
   * valid final key) and its .npy header. `descr` is a numpy dtype string such as "<f4", "|b1";
   * `nbytes` is the size of the raw C-order data that {@link write} will deliver (or that someone
   * else writes, {@link endWritten}). With `dataAt` the raw data starts at that file offset: it
   * must leave room for the headers after the end of the entries so far.
   */
  beginEntry(
    provisionalKey: string,
    descr: string,
    shape: number[],
    nbytes: number,
    dataAt?: number,
  ): NpzEntry {
    const { entry, head } = this.start(provisionalKey, descr, shape, nbytes, dataAt, false);
    const batch = this.batchAt(entry.offset);
    entry.head = head;
    entry.headBatch = batch;
    this.current = entry;
    this.pushRef(batch, head);
    return entry;
  }

  /**
   * An entry whose `nbytes` of raw data another writer puts in the file itself, from `dataAt` on
   * (as {@link beginEntry} with `dataAt` followed by {@link endWritten}), except that nothing is
   * written now: its local and .npy headers go out once, at {@link close}, with the final key and
   * the CRC that {@link setWrittenCrc} completes. So a forward pass whose bytes the agent writes
   * costs no file writes here while it runs.
   */
  placeWritten(
    provisionalKey: string,
    descr: string,
    shape: number[],
    nbytes: number,
    dataAt: number,
  ): NpzEntry {
    const { entry } = this.start(provisionalKey, descr, shape, nbytes, dataAt, true);
    entry.written = nbytes;
    entry.open = false;
    entry.crcPending = nbytes > 0;
    return entry;
  }

  /** Checks and books a new entry (beginEntry's and placeWritten's common part). */
  private start(
    provisionalKey: string,
    descr: string,
    shape: number[],
    nbytes: number,
    dataAt: number | undefined,
    headUnwritten: boolean,
  ): { entry: EntryState; head: Buffer } {
    this.checkUsable();
    if (this.current) {
      throw new NpzError(
        `cannot begin entry "${provisionalKey}": entry "${this.current.key}" is still open (call endEntry first)`,
      );
    }
    checkKey(provisionalKey);
    if (this.provisionalKeys.has(provisionalKey)) {
      throw new NpzError(`duplicate npz key "${provisionalKey}": provisional keys must be unique`);
    }
    if (!Number.isSafeInteger(nbytes) || nbytes < 0) {
      throw new NpzError(
        `entry "${provisionalKey}": nbytes must be a non-negative integer, got ${nbytes}`,
      );
    }
    const { npy, crc: npyCrc } = this.npyHeaderOf(descr, shape);
    const expected = numpyBytes(descr, shape);
    if (expected !== null && expected !== nbytes) {
      throw new NpzError(
        `entry "${provisionalKey}": shape (${shape.join(", ")}) of ${descr} holds ${expected} bytes, not ${nbytes}`,
      );
    }

    const offset = this.end;
    const size = npy.length + nbytes;
    const zip64Local = size >= this.zip64Threshold;
    const minRoom = NAME_ROOM + (zip64Local ? ZIP64_LOCAL_EXTRA : 0) + PAD_EXTRA_HEADER;
    // Grow the padding so the raw data (after the 64-byte-multiple .npy header) is 64-byte aligned,
    // or so that it starts where it was placed.
    const room =
      dataAt === undefined
        ? minRoom + ((64 - ((offset + LOCAL_FIXED + minRoom) % 64)) % 64)
        : dataAt - offset - LOCAL_FIXED - npy.length;
    if (
      dataAt !== undefined &&
      (!Number.isSafeInteger(dataAt) || room < minRoom || room > U16_MAX)
    ) {
      throw new NpzError(
        `entry "${provisionalKey}": its data cannot start at offset ${dataAt}: the headers need ${LOCAL_FIXED + minRoom + npy.length} bytes from offset ${offset}`,
      );
    }
    const dataStart = offset + LOCAL_FIXED + room + npy.length;
    const entry: EntryState = {
      key: provisionalKey,
      descr,
      shape: [...shape],
      nbytes,
      offset,
      size,
      room,
      zip64Local,
      dataStart,
      head: null,
      headBatch: null,
      headKey: provisionalKey,
      headUnwritten,
      written: 0,
      crc: npyCrc,
      open: true,
      crcPending: false,
      crcStale: false,
    };
    this.provisionalKeys.add(provisionalKey);
    this.entries.push(entry);
    this.end = dataStart + nbytes;
    return { entry, head: headUnwritten ? EMPTY : this.headOf(entry, npy) };
  }

  /** An entry's local header, name room and .npy header, as they precede its raw data. */
  private headOf(e: EntryState, npy: Buffer): Buffer {
    const head = Buffer.alloc(LOCAL_FIXED + e.room + npy.length);
    npy.copy(head, LOCAL_FIXED + e.room);
    writeLocalHeader(head, e, this.dosTime, this.dosDate, this.versionFor(e));
    return head;
  }

  /**
   * Appends the next piece of the open entry's data. Leave the piece untouched until the returned
   * promise resolves, and await it for backpressure. (A small piece is copied and resolves at
   * once, unless its batch went out, then it waits for the batch before: two batches in flight.)
   */
  write(entry: NpzEntry, piece: Uint8Array): Promise<void> {
    const e = entry as EntryState;
    try {
      this.checkUsable();
      if (e !== this.current) throw new NpzError(`entry "${e.key}" is not the open entry`);
      if (e.written + piece.byteLength > e.nbytes) {
        throw new NpzError(
          `entry "${e.key}": got ${e.written + piece.byteLength} bytes, more than the ${e.nbytes} announced`,
        );
      }
    } catch (err) {
      return Promise.reject(err);
    }
    const n = piece.byteLength;
    if (n === 0) return RESOLVED;
    const batch = this.batchAt(e.dataStart + e.written);
    e.written += n;
    if (this.copyMax === 0) {
      // immutable pieces: kept by reference; like copied ones, a piece waits only when its batch
      // went out, and then for the batch before it (two batches in flight at most)
      e.crc = zlib.crc32(piece, e.crc);
      const before = this.lastFlush;
      this.pushRef(batch, piece);
      return this.lastFlush === before || this.inflight.size < MAX_INFLIGHT ? RESOLVED : before;
    }
    if (n <= this.copyMax) {
      e.crc = zlib.crc32(piece, e.crc);
      const before = this.lastFlush;
      batch.slab ??= this.spareSlabs.pop() ?? Buffer.allocUnsafe(SLAB_BYTES);
      batch.slab.set(piece, batch.slabUsed);
      batch.slabUsed += n;
      batch.bytes += n;
      this.flushIfFull(batch);
      return this.lastFlush === before || this.inflight.size < MAX_INFLIGHT ? RESOLVED : before;
    }
    this.pushRef(batch, piece);
    // After the push: if it started the write, the CRC runs while the kernel copies.
    e.crc = zlib.crc32(piece, e.crc);
    return batch.done;
  }

  /** Finishes the open entry: checks that exactly `nbytes` arrived and fixes the CRC in its header. */
  async endEntry(entry: NpzEntry): Promise<void> {
    const e = entry as EntryState;
    this.checkUsable();
    if (e !== this.current) throw new NpzError(`entry "${e.key}" is not the open entry`);
    if (e.written !== e.nbytes) {
      throw new NpzError(`entry "${e.key}": got ${e.written} bytes, expected ${e.nbytes}`);
    }
    const { head, headBatch } = e;
    e.open = false;
    e.head = null;
    e.headBatch = null;
    this.current = null;
    if (!head || !headBatch) return;
    if (!headBatch.flushed) {
      head.writeUInt32LE(e.crc >>> 0, 14); // still ours: the batch writes it with the CRC
      return;
    }
    // The header went out with CRC 0; patch it once that write has landed (positional writes to
    // the same bytes may otherwise reorder). `head` itself may still be in use by that write.
    // Not awaited: the next entry need not wait for this one's disk round trips; a failure
    // poisons the writer and surfaces on a later call or in close(), which waits for it.
    const crc = Buffer.alloc(4);
    crc.writeUInt32LE(e.crc >>> 0);
    this.track(headBatch.done.then(() => writeAll(this.fh, [crc], e.offset + 14))).catch(() => {});
  }

  /**
   * Finishes the open entry whose `nbytes` of data another writer puts in the file itself, at its
   * data offset; its CRC comes later through {@link setWrittenCrc}, before {@link close}.
   */
  endWritten(entry: NpzEntry): void {
    const e = entry as EntryState;
    this.checkUsable();
    if (e !== this.current) throw new NpzError(`entry "${e.key}" is not the open entry`);
    if (e.written !== 0) {
      throw new NpzError(`entry "${e.key}": ${e.written} of its bytes came through write()`);
    }
    e.written = e.nbytes;
    e.open = false;
    e.head = null;
    e.headBatch = null;
    e.crcPending = e.nbytes > 0;
    e.crcStale = e.crcPending; // its header went out (or goes) with CRC 0
    this.current = null;
  }

  /** The CRC-32 of the raw data of an entry ended with {@link endWritten}. */
  setWrittenCrc(entry: NpzEntry, dataCrc: number): void {
    const e = entry as EntryState;
    this.checkUsable();
    if (!e.crcPending) throw new NpzError(`entry "${e.key}" is not waiting for a CRC`);
    e.crc = crc32Combine(e.crc, dataCrc, e.nbytes);
    e.crcPending = false;
  }

  /**
   * Gives an entry its final key (the npz key, without ".npy"). Allowed any time before
   * {@link close}, also while the entry is open, and more than once.
   */
  rename(entry: NpzEntry, finalKey: string): void {
    const e = entry as EntryState;
    this.checkUsable();
    checkKey(finalKey);
    const holder = this.finalKeys.get(finalKey);
    if (holder && holder !== e) {
      throw new NpzError(
        `duplicate npz key "${finalKey}": another entry was already renamed to it`,
      );
    }
    if (this.finalKeys.get(e.key) === e) this.finalKeys.delete(e.key);
    this.finalKeys.set(finalKey, e);
    e.key = finalKey;
  }

  /**
   * Writes the central directory (ZIP64 records when needed), rewrites the local header of each
   * renamed entry in place with its final name, and closes the file. Throws, leaving the writer
   * usable, if an entry is still open or two entries end up with the same key.
   */
  async close(): Promise<{ entries: number; bytes: number }> {
    this.checkUsable();
    if (this.current) {
      throw new NpzError(
        `cannot close: entry "${this.current.key}" is still open (call endEntry first)`,
      );
    }
    const waiting = this.entries.find((e) => e.crcPending);
    if (waiting) {
      throw new NpzError(
        `cannot close: entry "${waiting.key}" was written by another writer and its CRC never came`,
      );
    }
    const seen = new Set<string>();
    for (const e of this.entries) {
      if (seen.has(e.key)) {
        throw new NpzError(
          `duplicate npz key "${e.key}": an entry renamed to it clashes with an entry that kept it as provisional key`,
        );
      }
      seen.add(e.key);
    }
    this.flush();
    await this.settle();
    this.checkUsable();

    // Each renamed entry's local header (and each placed one's headers) in place: small positional
    // writes, one syscall each on the file's descriptor. Through the promise API each would be a
    // thread-pool round trip, some 30 µs, which for the thousands of passes of a small-op model
    // added up to most of close's time; a synchronous pwrite to the page cache is a few µs.
    try {
      for (const e of this.entries) {
        if (e.headKey === e.key && !e.crcStale && !e.headUnwritten) continue;
        e.headKey = e.key;
        e.crcStale = false;
        let h: Buffer;
        if (e.headUnwritten) {
          e.headUnwritten = false;
          h = this.headOf(e, this.npyHeaderOf(e.descr, [...e.shape]).npy);
        } else {
          h = Buffer.alloc(LOCAL_FIXED + e.room);
          writeLocalHeader(h, e, this.dosTime, this.dosDate, this.versionFor(e));
        }
        for (let done = 0; done < h.length; )
          done += fs.writeSync(this.fh.fd, h, done, h.length - done, e.offset + done);
      }
    } catch (err) {
      this.failure ??= err;
      throw err;
    }

    const directory = this.centralDirectory();
    await writeAll(this.fh, directory, this.end);
    const bytes = this.end + directory.reduce((n, b) => n + b.length, 0);
    // The agent reserves the file's blocks ahead of its direct writes (python_agent/torchlens_agent/
    // prealloc.py), which can leave zeros past the directory: a zip ends with its directory.
    await this.fh.truncate(bytes);
    this.finished = true;
    await this.fh.close();
    return { entries: this.entries.length, bytes };
  }

  /**
   * Stops writing, closes and deletes the file (for interrupted runs); pieces not yet handed to the
   * OS are dropped. Ignores I/O failures. Does nothing after a successful {@link close}.
   */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.current = null;
    // Pieces not handed to the OS yet are dropped; whoever awaits them learns why.
    this.batch?.reject(new NpzError(`npz writer for ${this.path} was aborted`));
    this.batch = null;
    await this.settle();
    await this.fh.close().catch(() => {});
    await fsp.rm(this.path, { force: true });
  }

  private versionFor(e: EntryState): number {
    return e.zip64Local || e.offset >= this.zip64Threshold ? VERSION_ZIP64 : VERSION_PLAIN;
  }

  private checkUsable(): void {
    if (this.failure) throw this.failure;
    if (this.finished) throw new NpzError(`npz writer for ${this.path} is already closed`);
  }

  /** The batch that continues at `pos`, starting a new one if the current batch can't. */
  private batchAt(pos: number): Batch {
    const b = this.batch;
    if (b && b.pos + b.bytes === pos) return b;
    this.flush();
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // Callers that don't await a piece must not crash the process; the failure resurfaces through
    // `failure` on the next call.
    done.catch(() => {});
    const batch: Batch = {
      pos,
      iov: [],
      bytes: 0,
      slab: null,
      slabUsed: 0,
      runStart: 0,
      flushed: false,
      done,
      resolve,
      reject,
    };
    this.batch = batch;
    // Whatever arrives before the event loop turns shares one writev; someone awaiting a piece
    // of this batch waits at most that long.
    setImmediate(() => {
      if (this.batch === batch) this.flush();
    });
    return batch;
  }

  /** Adds a buffer to the batch by reference (caller pieces over COPY_MAX_BYTES, our headers). */
  private pushRef(batch: Batch, piece: Uint8Array): void {
    endRun(batch);
    batch.iov.push(piece);
    batch.bytes += piece.byteLength;
    this.flushIfFull(batch);
  }

  private flushIfFull(batch: Batch): void {
    if (batch.bytes >= BATCH_BYTES || batch.iov.length >= BATCH_PIECES) this.flush();
  }

  private flush(): void {
    const b = this.batch;
    if (!b) return;
    this.batch = null;
    b.flushed = true;
    this.lastFlush = b.done;
    if (this.failure) {
      b.reject(this.failure);
      return;
    }
    endRun(b);
    this.track(writeAll(this.fh, b.iov, b.pos)).then(() => {
      if (b.slab && this.spareSlabs.length < SPARE_SLABS) this.spareSlabs.push(b.slab);
      b.resolve();
    }, b.reject);
  }

  /** Keeps `p` in the in-flight set; its failure poisons the writer. */
  private track(p: Promise<void>): Promise<void> {
    const tracked = p.catch((err: unknown) => {
      this.failure ??= err;
      throw err;
    });
    this.inflight.add(tracked);
    const forget = () => this.inflight.delete(tracked);
    tracked.then(forget, forget);
    return tracked;
  }

  private async settle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  private centralDirectory(): Buffer[] {
    const t = this.zip64Threshold;
    const out: Buffer[] = [];
    let cdSize = 0;
    for (const e of this.entries) {
      const name = Buffer.from(`${e.key}.npy`, "latin1");
      const bigSize = e.size >= t;
      const bigOffset = e.offset >= t;
      const extraLen = bigSize || bigOffset ? 4 + (bigSize ? 16 : 0) + (bigOffset ? 8 : 0) : 0;
      const h = Buffer.alloc(CENTRAL_FIXED + name.length + extraLen);
      const version = this.versionFor(e);
      h.writeUInt32LE(SIG_CENTRAL, 0);
      h.writeUInt16LE(MADE_BY_UNIX | version, 4);
      h.writeUInt16LE(version, 6);
      // flags 0, method 0 (stored)
      h.writeUInt16LE(this.dosTime, 12);
      h.writeUInt16LE(this.dosDate, 14);
      h.writeUInt32LE(e.crc >>> 0, 16);
      h.writeUInt32LE(bigSize ? U32_MAX : e.size, 20);
      h.writeUInt32LE(bigSize ? U32_MAX : e.size, 24);
      h.writeUInt16LE(name.length, 28);
      h.writeUInt16LE(extraLen, 30);
      // comment length, disk number start, internal attributes: 0
      h.writeUInt32LE(FILE_ATTRS, 38);
      h.writeUInt32LE(bigOffset ? U32_MAX : e.offset, 42);
      name.copy(h, CENTRAL_FIXED);
      let p = CENTRAL_FIXED + name.length;
      if (extraLen > 0) {
        p = h.writeUInt16LE(0x0001, p);
        p = h.writeUInt16LE(extraLen - 4, p);
        // ZIP64 extra: only the fields whose fixed slot holds 0xffffffff, in this order.
        if (bigSize) {
          p = h.writeBigUInt64LE(BigInt(e.size), p);
          p = h.writeBigUInt64LE(BigInt(e.size), p);
        }
        if (bigOffset) h.writeBigUInt64LE(BigInt(e.offset), p);
      }
      out.push(h);
      cdSize += h.length;
    }

    const cdOffset = this.end;
    const count = this.entries.length;
    const manyEntries = count >= U16_MAX;
    const bigCdSize = cdSize >= t;
    const bigCdOffset = cdOffset >= t;
    if (manyEntries || bigCdSize || bigCdOffset) {
      const z = Buffer.alloc(EOCD64_SIZE + EOCD64_LOCATOR_SIZE);
      z.writeUInt32LE(SIG_EOCD64, 0);
      z.writeBigUInt64LE(BigInt(EOCD64_SIZE - 12), 4);
      z.writeUInt16LE(MADE_BY_UNIX | VERSION_ZIP64, 12);
      z.writeUInt16LE(VERSION_ZIP64, 14);
      // this disk, disk with the directory: 0
      z.writeBigUInt64LE(BigInt(count), 24);
      z.writeBigUInt64LE(BigInt(count), 32);
      z.writeBigUInt64LE(BigInt(cdSize), 40);
      z.writeBigUInt64LE(BigInt(cdOffset), 48);
      z.writeUInt32LE(SIG_EOCD64_LOCATOR, EOCD64_SIZE);
      // disk with the ZIP64 end record: 0
      z.writeBigUInt64LE(BigInt(cdOffset + cdSize), EOCD64_SIZE + 8);
      z.writeUInt32LE(1, EOCD64_SIZE + 16); // total disks
      out.push(z);
    }
    const eocd = Buffer.alloc(EOCD_SIZE);
    eocd.writeUInt32LE(SIG_EOCD, 0);
    eocd.writeUInt16LE(manyEntries ? U16_MAX : count, 8);
    eocd.writeUInt16LE(manyEntries ? U16_MAX : count, 10);
    eocd.writeUInt32LE(bigCdSize ? U32_MAX : cdSize, 12);
    eocd.writeUInt32LE(bigCdOffset ? U32_MAX : cdOffset, 16);
    out.push(eocd);
    return out;
  }
}

/**
 * The .npy (format 1.0) magic and header for a C-order array, padded with spaces so the data that
 * follows starts at a multiple of 64 bytes. Uses format 2.0 if the header outgrows 64 KiB and 3.0
 * if it is not Latin-1.
 */
export function npyHeader(descr: string, shape: number[]): Buffer {
  // Characters that would break the Python literal numpy parses; real dtype strings never have them.
  if (
    descr.length === 0 ||
    /['\\]/.test(descr) ||
    hasCharCode(descr, (c) => c < 0x20 || c === 0x7f)
  ) {
    throw new NpzError(`invalid numpy dtype string ${JSON.stringify(descr)}`);
  }
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new NpzError(
        `invalid shape [${shape.join(", ")}]: dimensions must be non-negative integers`,
      );
    }
  }
  const tuple = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${tuple}, }`;
  const utf8 = hasCharCode(dict, (c) => c > 0xff);
  const encoding = utf8 ? "utf8" : "latin1";
  const dictBytes = Buffer.byteLength(dict, encoding);
  // magic (6) + version (2) + length (2 or 4) + dict + padding + "\n"
  let prefix = 10;
  let total = align64(prefix + dictBytes + 1);
  if (utf8 || total - prefix > U16_MAX) {
    prefix = 12;
    total = align64(prefix + dictBytes + 1);
  }
  const out = Buffer.alloc(total, 0x20);
  out.write("\x93NUMPY", 0, "latin1");
  out[6] = utf8 ? 3 : prefix === 12 ? 2 : 1;
  out[7] = 0;
  if (prefix === 10) out.writeUInt16LE(total - prefix, 8);
  else out.writeUInt32LE(total - prefix, 8);
  out.write(dict, prefix, encoding);
  out[total - 1] = 0x0a;
  return out;
}

/** Throws unless `key` may name an npz entry. */
export function checkKey(key: string): void {
  const bad = (why: string) => new NpzError(`invalid npz key ${JSON.stringify(key)}: ${why}`);
  if (key.length === 0) throw bad("it is empty");
  if (key.length > MAX_KEY_LENGTH)
    throw bad(`longer than ${MAX_KEY_LENGTH} characters (${key.length})`);
  if (!KEY_CHARS.test(key)) throw bad("only letters, digits and _ . : - are allowed");
  if (key.startsWith(".")) throw bad('it starts with "."');
  if (key.includes("..")) throw bad('it contains ".."');
}

/** Fills `h` with the local header and name room of `e` under its current key. */
function writeLocalHeader(
  h: Buffer,
  e: EntryState,
  time: number,
  date: number,
  version: number,
): void {
  const name = `${e.key}.npy`;
  h.writeUInt32LE(SIG_LOCAL, 0);
  h.writeUInt16LE(version, 4);
  h.writeUInt16LE(0, 6); // flags: sizes and CRC are in this header, no data descriptor
  h.writeUInt16LE(0, 8); // stored
  h.writeUInt16LE(time, 10);
  h.writeUInt16LE(date, 12);
  h.writeUInt32LE(e.open ? 0 : e.crc >>> 0, 14);
  h.writeUInt32LE(e.zip64Local ? U32_MAX : e.size, 18);
  h.writeUInt32LE(e.zip64Local ? U32_MAX : e.size, 22);
  h.writeUInt16LE(name.length, 26);
  h.writeUInt16LE(e.room - name.length, 28);
  let p = LOCAL_FIXED + h.write(name, LOCAL_FIXED, "latin1");
  if (e.zip64Local) {
    p = h.writeUInt16LE(0x0001, p);
    p = h.writeUInt16LE(16, p);
    p = h.writeBigUInt64LE(BigInt(e.size), p);
    p = h.writeBigUInt64LE(BigInt(e.size), p);
  }
  const padEnd = LOCAL_FIXED + e.room;
  p = h.writeUInt16LE(PAD_EXTRA_ID, p);
  p = h.writeUInt16LE(padEnd - p - 2, p);
  h.fill(0, p, padEnd);
}

/** Moves the batch's pending run of copied bytes into its iov list. */
function endRun(b: Batch): void {
  if (b.slab && b.slabUsed > b.runStart) {
    b.iov.push(b.slab.subarray(b.runStart, b.slabUsed));
    b.runStart = b.slabUsed;
  }
}

/** Writes all of `bufs` at `pos`, continuing after short writes. */
async function writeAll(fh: FileHandle, bufs: Uint8Array[], pos: number): Promise<void> {
  let rest = bufs;
  let at = pos;
  for (;;) {
    const want = rest.reduce((n, b) => n + b.byteLength, 0);
    if (want === 0) return;
    const { bytesWritten } =
      rest.length === 1
        ? await fh.write(rest[0] as Uint8Array, 0, want, at)
        : await fh.writev(rest, at);
    if (bytesWritten === want) return;
    if (bytesWritten <= 0) throw new NpzError(`write to .npz stalled at offset ${at}`);
    at += bytesWritten;
    let skip = bytesWritten;
    const next: Uint8Array[] = [];
    for (const b of rest) {
      if (skip >= b.byteLength) skip -= b.byteLength;
      else {
        next.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    rest = next;
  }
}

function hasCharCode(s: string, test: (code: number) => boolean): boolean {
  for (let i = 0; i < s.length; i++) if (test(s.charCodeAt(i))) return true;
  return false;
}

function align64(n: number): number {
  return Math.ceil(n / 64) * 64;
}

/** MS-DOS [date, time] fields of a local time; ZIP can't say anything before 1980. */
function dosDateTime(d: Date): [number, number] {
  const year = Math.max(d.getFullYear(), 1980);
  const date = ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate();
  const time = (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1);
  return [date, time];
}
