import { readFileSync } from "node:fs";
import { Readable } from "node:stream";
import { Packr } from "msgpackr";
import {
  DATA_SLICE_BYTES,
  encodeFrame,
  type Frame,
  MAX_HEADER_BYTES,
  PROTOCOL,
  readFrames,
  WireError,
} from "../../src/agent/wire.js";

const recorded = readFileSync(new URL("../fixtures/stream_branching_mlp.bin", import.meta.url));

/** Feed `bytes` to readFrames in chunks of the given sizes (cycled). */
async function parse(bytes: Buffer, sizes: number[]): Promise<Frame[]> {
  const chunks: Buffer[] = [];
  for (let off = 0, i = 0; off < bytes.length; i++) {
    const n = sizes[i % sizes.length];
    chunks.push(bytes.subarray(off, off + n));
    off += n;
  }
  const frames: Frame[] = [];
  for await (const f of readFrames(Readable.from(chunks))) frames.push(f);
  return frames;
}

function summary(frames: Frame[]) {
  return frames.map((f) => ({
    type: f.header.type,
    id: f.header.id,
    bytes: Buffer.concat(f.payload).toString("hex"),
  }));
}

describe("readFrames on a stream recorded from the real agent", () => {
  test("the recorded stream parses into hello, model, op/data/module records and done", async () => {
    const frames = await parse(recorded, [recorded.length]);
    const types = frames.map((f) => f.header.type);
    expect(types[0]).toBe("hello");
    expect(frames[0].header.protocol).toBe(PROTOCOL);
    expect(types[1]).toBe("model");
    expect(types[types.length - 1]).toBe("done");
    expect(types).toContain("pass");
    expect(types).toContain("data");
    expect(types).toContain("module");
  });

  test("every saved pass is followed by data frames carrying exactly its stored_nbytes", async () => {
    const frames = await parse(recorded, [recorded.length]);
    for (let i = 0; i < frames.length; i++) {
      const h = frames[i].header;
      if (h.type !== "pass" || !h.stored_nbytes) continue;
      let got = 0;
      let j = i + 1;
      while (j < frames.length && frames[j].header.type === "data") {
        expect(frames[j].header.id).toBe(h.id);
        got += frames[j].payload.reduce((s, p) => s + p.length, 0);
        j++;
      }
      expect(got).toBe(h.stored_nbytes);
    }
  });

  test("chunk boundaries anywhere (1 byte, odd sizes) give the same frames as one big chunk", async () => {
    const whole = summary(await parse(recorded, [recorded.length]));
    expect(summary(await parse(recorded, [1]))).toEqual(whole);
    expect(summary(await parse(recorded, [3, 7, 1, 4096, 13]))).toEqual(whole);
  });

  test("payload pieces are views of the read chunks, not copies", async () => {
    const frames = await parse(recorded, [recorded.length]);
    const data = frames.find((f) => f.header.type === "data" && f.payload.length);
    expect(data?.payload[0].buffer).toBe(recorded.buffer);
  });
});

describe("readFrames on bad input", () => {
  const packr = new Packr({ useRecords: false });
  const frame = (header: object, payload = Buffer.alloc(0)) => {
    const body = packr.pack(header);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(body.length);
    return Buffer.concat([len, body, payload]);
  };

  test("a stream cut inside a frame is an error, not a silent end", async () => {
    const bytes = frame({ type: "data", id: 1, nbytes: 10 }, Buffer.alloc(10));
    await expect(parse(bytes.subarray(0, bytes.length - 3), [5])).rejects.toThrow(WireError);
  });

  test("an absurd header length (text printed to the wire) is rejected", async () => {
    await expect(parse(Buffer.from("hello world, not a frame\n"), [100])).rejects.toThrow(
      WireError,
    );
    const huge = Buffer.alloc(4);
    huge.writeUInt32LE(MAX_HEADER_BYTES + 1);
    await expect(parse(huge, [4])).rejects.toThrow(/header/);
  });

  test("a header that is not a map with a type is rejected", async () => {
    const body = packr.pack([1, 2, 3]);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(body.length);
    await expect(parse(Buffer.concat([len, body]), [64])).rejects.toThrow(/type/);
  });

  test("multi-frame tensors reassemble in order across data frames", async () => {
    const a = Buffer.from([1, 2, 3, 4]);
    const b = Buffer.from([5, 6]);
    const bytes = Buffer.concat([
      frame({ type: "pass", id: 7, stored_nbytes: 6 }),
      frame({ type: "data", id: 7, nbytes: 4 }, a),
      frame({ type: "data", id: 7, nbytes: 2 }, b),
    ]);
    const frames = await parse(bytes, [5]);
    expect(frames.map((f) => f.header.type)).toEqual(["pass", "data", "data"]);
    expect(frames[0].payload).toEqual([]); // pass records never carry a payload, whatever their stored_nbytes says
    expect(Buffer.concat([...frames[1].payload, ...frames[2].payload])).toEqual(
      Buffer.concat([a, b]),
    );
  });
});

describe("readFrames hands on a large data frame as it arrives", () => {
  const packr = new Packr({ useRecords: false });
  const size = 3 * DATA_SLICE_BYTES + 12345;
  const payload = Buffer.alloc(size);
  for (let i = 0; i < size; i++) payload[i] = (i * 7) & 0xff;
  const body = packr.pack({ type: "data", id: 3, nbytes: size });
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length);
  const tail = packr.pack({ type: "done" });
  const tailLen = Buffer.alloc(4);
  tailLen.writeUInt32LE(tail.length);
  const bytes = Buffer.concat([len, body, payload, tailLen, tail]);

  test("the pieces of one data frame concatenate to its payload, each header giving its own size", async () => {
    const frames = await parse(bytes, [64 << 10]);
    const data = frames.filter((f) => f.header.type === "data");
    expect(data.length).toBeGreaterThan(1);
    for (const f of data) {
      expect(f.header.id).toBe(3);
      expect(f.header.nbytes).toBe(f.payload.reduce((n, p) => n + p.length, 0));
    }
    expect(Buffer.concat(data.flatMap((f) => f.payload)).equals(payload)).toBe(true);
    expect(frames.at(-1)?.header.type).toBe("done");
  });

  test("the first piece comes out before the rest of the frame is read", async () => {
    let pulled = 0;
    async function* chunks() {
      for (let off = 0; off < bytes.length; off += 64 << 10) {
        pulled = off + (64 << 10);
        yield bytes.subarray(off, off + (64 << 10));
      }
    }
    for await (const f of readFrames(chunks())) {
      if (f.header.type === "data") {
        expect(pulled).toBeLessThanOrEqual(DATA_SLICE_BYTES + (128 << 10));
        break;
      }
    }
  });
});

test("encodeFrame writes a little-endian length and a msgpack map the agent can read", () => {
  const bytes = encodeFrame({ type: "extract", seed: 3 });
  expect(bytes.readUInt32LE(0)).toBe(bytes.length - 4);
});

test("sizes past 4 GiB (msgpack uint64) decode as plain numbers, not BigInts", async () => {
  const packr = new Packr({ useRecords: false });
  const body = Buffer.concat([
    packr.pack({ type: "pass", id: 1 }).subarray(0, 0),
    Buffer.from([
      0x82, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xa2, 0x6f, 0x70, 0xa6, 0x6e, 0x62, 0x79, 0x74, 0x65,
      0x73, 0xcf, 0, 0, 0, 1, 0x20, 0, 0, 0,
    ]),
  ]);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length);
  const frames: Frame[] = [];
  for await (const f of readFrames(Readable.from([Buffer.concat([len, body])]))) frames.push(f);
  expect(frames[0].header.nbytes).toBe(4831838208);
});
