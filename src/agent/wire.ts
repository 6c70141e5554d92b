/**
 * The CLI's side of the wire (docs/wire.md): frames of a u32 little-endian header length, a
 * msgpack header, and a raw payload when the header carries `nbytes` (data frames). Payloads are
 * handed on as slices of the chunks read from the pipe: never concatenated, never copied.
 */
import { Packr, Unpackr } from "msgpackr";

export const PROTOCOL = 2;
export const MAX_HEADER_BYTES = 16 << 20;
export const MAX_PAYLOAD_BYTES = 64 << 20;
/** Part of a data frame's payload is handed on once this much of it has arrived. */
export const DATA_SLICE_BYTES = 1 << 20;

/** A request's `input` (docs/wire.md): a .pt or .npy file, random inputs of given shapes, or the file's `example_input()`. */
export type InputRequest =
  | { kind: "file"; path: string }
  | { kind: "shape"; shapes: number[][]; dtype: string }
  | { kind: "example" };

export interface Frame {
  header: { type: string; [key: string]: unknown };
  /** The payload's pieces, in order (empty when the frame has none). */
  payload: Buffer[];
}

const packr = new Packr({ useRecords: false });
// sizes past 4 GiB arrive as uint64: numbers, not BigInts (safe up to 2^53 bytes)
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" });

/** Encode one request frame (requests never carry payloads). */
export function encodeFrame(header: { type: string; [key: string]: unknown }): Buffer {
  const body = packr.pack(header);
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32LE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

/** Thrown when the byte stream is not the protocol (a corrupted pipe, a foreign program). */
export class WireError extends Error {}

/** A queue of received chunks from which exact byte counts are taken. */
class ChunkQueue {
  private chunks: Buffer[] = [];
  private head = 0; // offset into chunks[0]
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length) {
      this.chunks.push(chunk);
      this.length += chunk.length;
    }
  }

  /** Take n bytes as slices of the queued chunks. */
  take(n: number): Buffer[] {
    const out: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const first = this.chunks[0];
      const avail = first.length - this.head;
      if (avail <= need) {
        out.push(this.head === 0 ? first : first.subarray(this.head));
        this.chunks.shift();
        this.head = 0;
        need -= avail;
      } else {
        out.push(first.subarray(this.head, this.head + need));
        this.head += need;
        need = 0;
      }
    }
    this.length -= n;
    return out;
  }

  /** Take n bytes as one contiguous buffer (copies only when they span chunks). */
  takeContiguous(n: number): Buffer {
    const parts = this.take(n);
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, n);
  }
}

/**
 * Parse frames from a byte stream. Pull-based: the next chunk is read only when the consumer asks
 * for the next frame, so a slow consumer holds the agent back through the pipe (backpressure).
 *
 * A `data` frame's payload is handed on as it arrives, not when all of it is there: a 16 MiB
 * frame comes out as several `data` frames with the same header, each with the bytes read so far
 * (at least {@link DATA_SLICE_BYTES} of them, or the rest of the frame). The bytes of a pass are
 * the concatenation of its data frames' payloads either way; this way the npz writer works while
 * the agent is still sending, instead of the two taking turns.
 */
export async function* readFrames(stream: AsyncIterable<Buffer>): AsyncGenerator<Frame> {
  const queue = new ChunkQueue();
  let header: Frame["header"] | null = null;
  let headerLength = -1;
  let payloadLength = 0;
  for await (const chunk of stream) {
    queue.push(chunk);
    for (;;) {
      if (headerLength < 0) {
        if (queue.length < 4) break;
        headerLength = queue.takeContiguous(4).readUInt32LE(0);
        if (headerLength > MAX_HEADER_BYTES || headerLength === 0) {
          throw new WireError(`bad frame: a header of ${headerLength} bytes`);
        }
      }
      if (header === null) {
        if (queue.length < headerLength) break;
        const decoded = unpackr.unpack(queue.takeContiguous(headerLength));
        if (decoded === null || typeof decoded !== "object" || typeof decoded.type !== "string") {
          throw new WireError("bad frame: the header is not a map with a type");
        }
        header = decoded as Frame["header"];
        payloadLength =
          typeof header.nbytes === "number" && header.type === "data" ? header.nbytes : 0;
        if (payloadLength > MAX_PAYLOAD_BYTES) {
          throw new WireError(`bad frame: a payload of ${payloadLength} bytes`);
        }
      }
      if (queue.length < payloadLength) {
        // part of a data frame: pass on what is here once it is worth a write
        if (queue.length < DATA_SLICE_BYTES) break;
        const n = queue.length;
        payloadLength -= n;
        yield { header: { ...header, nbytes: n }, payload: queue.take(n) };
        continue;
      }
      const payload = payloadLength ? queue.take(payloadLength) : [];
      const frame: Frame = {
        // a copy only for the rest of a frame handed on in parts (its nbytes is the rest's)
        header:
          payloadLength && payloadLength !== header.nbytes
            ? { ...header, nbytes: payloadLength }
            : header,
        payload,
      };
      header = null;
      headerLength = -1;
      payloadLength = 0;
      yield frame;
    }
  }
  if (headerLength >= 0 || queue.length > 0) {
    throw new WireError("the stream ended inside a frame");
  }
}
