/**
 * The recorder fed a stream recorded from the real agent (test/fixtures/stream_branching_mlp.bin,
 * made by test/helpers/record_stream.py): frames in, a run directory out, with no Python. Also the
 * store's check of a run's arrays (verifyArrays) on the run it writes.
 */
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeSync } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import zlib from "node:zlib";
import { afterAll, describe, expect, test } from "@jest/globals";
import { type Frame, readFrames } from "../../src/agent/wire.js";
import { buildLog } from "../../src/log/build.js";
import { LOG_SCHEMA } from "../../src/log/types.js";
import type { Manifest } from "../../src/store/manifest.js";
import { NpzReader } from "../../src/store/npzRead.js";
import { readRun } from "../../src/store/readRun.js";
import { type NextFrame, Recorder, readDryRun } from "../../src/store/recorder.js";
import { verifyArrays } from "../../src/store/verify.js";
import { tempDir } from "../helpers/cli.js";

const recorded = readFileSync(new URL("../fixtures/stream_branching_mlp.bin", import.meta.url));

/** The recorded frames after the hello (the recorder's part of the stream), in small chunks. */
async function streamFrames(): Promise<Frame[]> {
  const chunks: Buffer[] = [];
  for (let off = 0; off < recorded.length; off += 777)
    chunks.push(recorded.subarray(off, off + 777));
  const frames: Frame[] = [];
  for await (const f of readFrames(Readable.from(chunks))) frames.push(f);
  expect(frames[0].header.type).toBe("hello");
  return frames.slice(1);
}

function feed(frames: Frame[]): NextFrame {
  let i = 0;
  return async () => {
    if (i >= frames.length) throw new Error("the stream ended before done");
    return frames[i++];
  };
}

/** The bytes the stream carried for each pass id. */
function bytesById(frames: Frame[]): Map<number, Buffer> {
  const parts = new Map<number, Buffer[]>();
  for (const f of frames)
    if (f.header.type === "data") {
      const id = f.header.id as number;
      parts.set(id, [...(parts.get(id) ?? []), ...f.payload]);
    }
  return new Map([...parts].map(([id, p]) => [id, Buffer.concat(p)]));
}

function manifestFor(): Manifest {
  return {
    tool: "torchlens",
    version: "0.0.0-test",
    protocol: 1,
    schema: LOG_SCHEMA,
    status: "complete",
    created: "2026-01-01T00:00:00.000Z",
    command: ["torchlens", "extract"],
    agent: {
      python: "3",
      executable: "python3",
      torch: "1",
      numpy: "1",
      platform: "x",
      agent: "0",
    },
    model: { file: "/m.py", sha256: "0".repeat(64), name: null, class: "BranchingMLP" },
    input: { kind: "example" },
    options: { device: "cpu", seed: 0, layers: null, grad: false },
    seed: 0,
    files: { log: "log.json", activations: "activations.npz" },
    counts: { passes: 0, layers: 0, saved: 0, bytes: 0, ops_dispatched: 0 },
    timings: { wall_ms: 0, forward_ms: 0, first_op_ms: null, forwards: 1, forward_passes: 1 },
  };
}

const tmp = tempDir("torchlens-recorder-");
afterAll(() => tmp.cleanup());

describe("a recorded stream through the recorder", () => {
  const target = path.join(tmp.dir, "run");
  let frames: Frame[];
  const progress: [number, number][] = [];

  test("becomes a committed run: the npz holds each saved pass under its label with the bytes the agent sent", async () => {
    frames = await streamFrames();
    const recorder = await Recorder.create(target, false);
    expect(existsSync(target)).toBe(false); // written beside it until commit
    const got = await recorder.record(feed(frames), (passes, bytes) =>
      progress.push([passes, bytes]),
    );
    const log = recorder.log(got, null);
    expect(log.model.class).toBe("BranchingMLP");
    await recorder.writeLog(log);
    await recorder.writeManifest(manifestFor());
    await recorder.commit();
    expect(readdirSync(tmp.dir)).toEqual(["run"]); // no temporary directory left
    expect(readdirSync(target).sort()).toEqual(["activations.npz", "log.json", "manifest.json"]);

    const sent = bytesById(frames);
    const saved = log.passes.filter((p) => p.saved);
    expect(recorder.saved).toBe(saved.length);
    expect(saved.length).toBe(sent.size);
    expect(got.bytes).toBe([...sent.values()].reduce((n, b) => n + b.length, 0));
    const reader = await NpzReader.open(path.join(target, "activations.npz"));
    try {
      expect(reader.keys().sort()).toEqual(saved.map((p) => p.array as string).sort());
      for (const p of saved) {
        const { info, data } = await reader.read(p.array as string);
        expect(info.shape).toEqual(p.shape);
        expect(data.equals(sent.get(p.id) as Buffer)).toBe(true);
      }
    } finally {
      await reader.close();
    }
    const run = await readRun(target);
    expect(run.log).toEqual(JSON.parse(JSON.stringify(log)));
    expect(run.manifest.model.class).toBe("BranchingMLP");
  });

  test("reports progress after every op and data frame, ending at every pass and byte", () => {
    const ops = frames.filter((f) => f.header.type === "pass").length;
    const data = frames.filter((f) => f.header.type === "data").length;
    expect(progress.length).toBe(ops + data);
    expect(progress.at(-1)).toEqual([
      ops,
      [...bytesById(frames).values()].reduce((n, b) => n + b.length, 0),
    ]);
    for (let i = 1; i < progress.length; i++) {
      expect(progress[i][0]).toBeGreaterThanOrEqual(progress[i - 1][0]);
      expect(progress[i][1]).toBeGreaterThanOrEqual(progress[i - 1][1]);
    }
  });

  test("verifyArrays finds its arrays whole, and names the pass whose stored bytes were altered", async () => {
    const run = await readRun(target);
    const checked: number[] = [];
    expect(await verifyArrays(run, (i) => checked.push(i))).toEqual([]);
    const saved = run.log.passes.filter((p) => p.saved);
    expect(checked).toEqual(saved.map((_, i) => i + 1));
    const victim = saved[saved.length - 1];
    const reader = await NpzReader.open(run.npz);
    const { dataOffset } = await reader.info(victim.array as string);
    await reader.close();
    const fd = openSync(run.npz, "r+");
    const byte = Buffer.alloc(1);
    byte[0] = readFileSync(run.npz)[dataOffset] ^ 0xff;
    writeSync(fd, byte, 0, 1, dataOffset);
    closeSync(fd);
    expect(await verifyArrays(run)).toEqual([victim.label]);
  });
});

describe("the recorder refuses a stream that breaks the protocol, and leaves nothing behind", () => {
  async function failWith(edit: (frames: Frame[]) => Frame[], message: RegExp) {
    const target = path.join(tmp.dir, `bad-${Math.random().toString(36).slice(2)}`);
    const recorder = await Recorder.create(target, false);
    const before = readdirSync(tmp.dir).length;
    await expect(recorder.record(feed(edit(await streamFrames())))).rejects.toThrow(message);
    await recorder.discard();
    expect(readdirSync(tmp.dir).length).toBe(before - 1);
    expect(existsSync(target)).toBe(false);
  }

  test("bytes for another pass than the one announced", async () => {
    await failWith((fs) => {
      const i = fs.findIndex((f) => f.header.type === "data");
      fs[i] = { ...fs[i], header: { ...fs[i].header, id: 999 } };
      return fs;
    }, /bytes for pass 999 out of order/);
  });

  test("a pass announced before the previous one's bytes are all there", async () => {
    await failWith(
      (fs) => fs.filter((f, i) => !(f.header.type === "data" && i < 3)),
      /before finishing the bytes of pass/,
    );
  });

  test("a done without the model", async () => {
    await failWith(
      (fs) => fs.filter((f) => f.header.type !== "model"),
      /without describing the model/,
    );
  });
});

describe("a dry run (extract --layers needing final labels) saves nothing", () => {
  test("a stream without bytes gives the saving forward's raw run, and the same labels", async () => {
    const frames = await streamFrames();
    const recorder = await Recorder.create(path.join(tmp.dir, "saving"), false);
    const saving = await recorder.record(feed(frames));
    await recorder.discard();
    const unsaved = frames
      .filter((f) => f.header.type !== "data")
      .map((f) =>
        f.header.type === "pass" ? { ...f, header: { ...f.header, stored_dtype: null } } : f,
      );
    const dry = await readDryRun(feed(unsaved));
    expect(dry.bytes).toBe(0);
    expect(dry.raw.ops).toEqual(saving.raw.ops.map((op) => ({ ...op, stored_dtype: null })));
    const dryLog = buildLog(dry.raw, () => false);
    expect(dryLog.passes.every((p) => !p.saved && p.array === null)).toBe(true);
    expect(dryLog.passes.map((p) => p.label)).toEqual(
      buildLog(saving.raw, () => true).passes.map((p) => p.label),
    );
  });

  test("bytes sent during a dry run are an error", async () => {
    await expect(readDryRun(feed(await streamFrames()))).rejects.toThrow(
      /sent bytes for pass 1 during a forward that saves nothing/,
    );
  });
});

describe("direct writes: the agent puts a pass's bytes into activations.npz itself", () => {
  /**
   * The recorded stream as an agent with a direct file sends it: every saved pass placed (`at`, by
   * the agent's rule in docs/wire.md), the passes in `direct` written straight into the npz here
   * (as the agent would) with no data frames, their CRCs in `done`.
   */
  function asDirect(
    frames: Frame[],
    file: { path: string; at: number },
    direct: Set<number>,
    crcs = true,
  ) {
    const sent = bytesById(frames);
    const fd = openSync(file.path, "r+");
    const out: Frame[] = [];
    const written: [number, number][] = [];
    let end = file.at;
    for (const f of frames) {
      const h = f.header;
      if (h.type === "data" && direct.has(h.id as number)) continue;
      if (h.type === "pass" && h.stored_dtype !== null) {
        const id = h.id as number;
        const at = Math.ceil((end + 448 + 32 * (h.shape as number[]).length) / 64) * 64;
        end = at + (h.stored_nbytes as number);
        const header = { ...h, at, ...(direct.has(id) ? { direct: true } : {}) };
        if (direct.has(id)) {
          const bytes = sent.get(id) as Buffer;
          writeSync(fd, bytes, 0, bytes.length, at);
          written.push([id, zlib.crc32(bytes)]);
        }
        out.push({ header, payload: [] });
        continue;
      }
      if (h.type === "done" && crcs) {
        out.push({ header: { ...h, direct_crcs: written }, payload: [] });
        continue;
      }
      out.push(f);
    }
    closeSync(fd);
    return { frames: out, sent };
  }

  test("placed passes, some written directly, read back with the bytes the agent had", async () => {
    const frames = await streamFrames();
    const target = path.join(tmp.dir, "direct-run");
    const recorder = await Recorder.create(target, false);
    const saved = frames.filter((f) => f.header.type === "pass" && f.header.stored_dtype !== null);
    const direct = new Set(saved.filter((_, i) => i % 2 === 0).map((f) => f.header.id as number));
    const stream = asDirect(frames, recorder.direct(), direct);
    const got = await recorder.record(feed(stream.frames));
    const log = recorder.log(got, null);
    await recorder.writeLog(log);
    await recorder.writeManifest(manifestFor());
    await recorder.commit();
    expect(got.bytes).toBe([...stream.sent.values()].reduce((n, b) => n + b.length, 0));
    const reader = await NpzReader.open(path.join(target, "activations.npz"));
    try {
      for (const p of log.passes.filter((q) => q.saved)) {
        const { data } = await reader.read(p.array as string);
        expect(data.equals(stream.sent.get(p.id) as Buffer)).toBe(true);
      }
    } finally {
      await reader.close();
    }
    expect(await verifyArrays(await readRun(target))).toEqual([]); // CRCs and sizes whole
  });

  test("a pass written directly whose CRC never comes fails the run, naming the pass", async () => {
    const frames = await streamFrames();
    const recorder = await Recorder.create(path.join(tmp.dir, "direct-nocrc"), false);
    const first = frames.find((f) => f.header.type === "pass" && f.header.stored_dtype !== null);
    const id = first?.header.id as number;
    const stream = asDirect(frames, recorder.direct(), new Set([id]), false);
    await expect(recorder.record(feed(stream.frames))).rejects.toThrow(
      new RegExp(`wrote the bytes of pass ${id} but sent no CRC`),
    );
    await recorder.discard();
  });
});
