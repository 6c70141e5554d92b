/**
 * The .npz writer, read back by the real consumers: numpy.load, Python's zipfile (testzip and its
 * local-name check) and Info-ZIP's `unzip -t` where installed. Needs Debian's /usr/bin/python3
 * with numpy.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import zlib from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { crc32Combine } from "../../src/store/crc32.js";
import {
  BATCH_BYTES,
  MAX_KEY_LENGTH,
  type NpzEntry,
  NpzError,
  NpzWriter,
  npyHeader,
} from "../../src/store/npz.js";

const PYTHON = "/usr/bin/python3";
const UNZIP = "/usr/bin/unzip";

const READ_BACK = `
import hashlib, json, sys, zipfile
import numpy as np
path = sys.argv[1]
with zipfile.ZipFile(path) as z:
    bad = z.testzip()
    names = z.namelist()
arrays = {}
with np.load(path) as f:
    for k in f.files:
        a = f[k]
        info = {"descr": a.dtype.str, "shape": list(a.shape),
                "sha": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()}
        if a.size <= 16 and (a.dtype.kind in "biu" or (a.dtype.kind == "f" and np.isfinite(a).all())):
            info["values"] = a.tolist()
        arrays[k] = info
print(json.dumps({"testzip": bad, "names": names, "arrays": arrays}))
`;

interface ReadBack {
  testzip: string | null;
  names: string[];
  arrays: Record<string, { descr: string; shape: number[]; sha: string; values?: unknown }>;
}

function readBack(path: string): ReadBack {
  const out = execFileSync(PYTHON, ["-c", READ_BACK, path], { encoding: "utf8" });
  return JSON.parse(out) as ReadBack;
}

/** `unzip -t` verdict, or null where unzip is not installed. */
function unzipTest(path: string): { status: number | null; out: string } | null {
  if (!existsSync(UNZIP)) return null;
  const r = spawnSync(UNZIP, ["-t", path], { encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Splits `data` into pieces of 0..maxPiece bytes (zero-length ones included). */
function pieces(data: Uint8Array, maxPiece: number, seed = 1): Uint8Array[] {
  const out: Uint8Array[] = [];
  let s = seed;
  let at = 0;
  while (at < data.length) {
    s = (s * 1103515245 + 12345) >>> 0;
    const n = Math.min(s % (maxPiece + 1), data.length - at);
    out.push(data.subarray(at, at + n));
    at += n;
  }
  return out;
}

interface Spec {
  key: string;
  descr: string;
  shape: number[];
  data: Uint8Array;
}

function itemsize(descr: string): number {
  return Number(descr.slice(2));
}

function spec(key: string, descr: string, shape: number[]): Spec {
  const n = shape.reduce((a, b) => a * b, 1) * itemsize(descr);
  const data = new Uint8Array(randomBytes(n));
  if (descr === "|b1") for (let i = 0; i < n; i++) data[i] = (data[i] as number) & 1;
  return { key, descr, shape, data };
}

async function writeEntry(
  w: NpzWriter,
  s: Spec,
  how: "one" | "awaited" | "burst",
): Promise<NpzEntry> {
  const e = w.beginEntry(s.key, s.descr, s.shape, s.data.length);
  if (how === "one") await w.write(e, s.data);
  else if (how === "awaited") for (const p of pieces(s.data, 37)) await w.write(e, p);
  else await Promise.all(pieces(s.data, 300).map((p) => w.write(e, p)));
  await w.endEntry(e);
  return e;
}

function expectSame(got: ReadBack, specs: Spec[]): void {
  expect(got.testzip).toBeNull();
  expect(got.names).toEqual(specs.map((s) => `${s.key}.npy`));
  for (const s of specs) {
    expect({ key: s.key, ...got.arrays[s.key] }).toMatchObject({
      key: s.key,
      descr: s.descr,
      shape: s.shape,
      sha: sha(s.data),
    });
  }
}

/** Offsets of a 4-byte little-endian signature in `buf`. */
function findSignature(buf: Buffer, sig: number): number[] {
  const needle = Buffer.alloc(4);
  needle.writeUInt32LE(sig);
  const found: number[] = [];
  for (let i = buf.indexOf(needle); i >= 0; i = buf.indexOf(needle, i + 1)) found.push(i);
  return found;
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "npz-test-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("npyHeader", () => {
  test("header is v1.0, a multiple of 64 bytes, newline-terminated, with numpy's tuple syntax", () => {
    const cases: [number[], string][] = [
      [[], "()"],
      [[3], "(3,)"],
      [[2, 3, 4, 5], "(2, 3, 4, 5)"],
      [[0, 3], "(0, 3)"],
    ];
    for (const [shape, tuple] of cases) {
      const h = npyHeader("<f4", shape);
      expect(h.length % 64).toBe(0);
      expect(h.subarray(0, 8)).toEqual(Buffer.from("\x93NUMPY\x01\x00", "latin1"));
      expect(h.readUInt16LE(8)).toBe(h.length - 10);
      expect(h[h.length - 1]).toBe(0x0a);
      expect(h.toString("latin1", 10).trimEnd()).toBe(
        `{'descr': '<f4', 'fortran_order': False, 'shape': ${tuple}, }`,
      );
    }
  });

  test("header switches to v2.0 when it outgrows the 16-bit length", () => {
    const h = npyHeader("<f4", new Array(30000).fill(1));
    expect(h[6]).toBe(2);
    expect(h.readUInt32LE(8)).toBe(h.length - 12);
    expect(h.length % 64).toBe(0);
  });

  test("a dtype string that would break the header literal is refused", () => {
    expect(() => npyHeader("<f4'", [1])).toThrow(/invalid numpy dtype/);
    expect(() => npyHeader("", [1])).toThrow(/invalid numpy dtype/);
    expect(() => npyHeader("<f4", [-1])).toThrow(/invalid shape/);
    expect(() => npyHeader("<f4", [1.5])).toThrow(/invalid shape/);
  });
});

describe("NpzWriter read back by numpy and zipfile", () => {
  test("every dtype and shape survives, written in one piece, in awaited small pieces and in bursts", async () => {
    const specs = [
      spec("f4_scalar", "<f4", []),
      spec("f8_1d", "<f8", [7]),
      spec("f2_2d", "<f2", [3, 5]),
      spec("i1_4d", "|i1", [2, 3, 4, 5]),
      spec("i2", "<i2", [33]),
      spec("i4", "<i4", [4, 4]),
      spec("i8", "<i8", [9]),
      spec("u1", "|u1", [100]),
      spec("b1", "|b1", [2, 8]),
      spec("c8", "<c8", [3, 2]),
      spec("c16", "<c16", [5]),
      spec("empty_0x3", "<f4", [0, 3]),
      spec("big_f4", "<f4", [64, 1000]),
    ];
    const path = join(dir, "dtypes.npz");
    const w = await NpzWriter.create(path);
    const ways = ["one", "awaited", "burst"] as const;
    for (const [i, s] of specs.entries())
      await writeEntry(w, s, ways[i % 3] as (typeof ways)[number]);
    const res = await w.close();
    expect(res.entries).toBe(specs.length);
    expect(res.bytes).toBe(readFileSync(path).length);

    const got = readBack(path);
    expectSame(got, specs);
    expect(got.arrays.empty_0x3?.shape).toEqual([0, 3]);
    const unzip = unzipTest(path);
    if (unzip) expect(unzip).toMatchObject({ status: 0 });
  });

  test("known values read back as the same numbers (guards byte order and C order)", async () => {
    const path = join(dir, "values.npz");
    const w = await NpzWriter.create(path);
    const vals = new Float32Array([1.5, -2, 3.25, 0, 1e10, -7]);
    const e = w.beginEntry("m", "<f4", [2, 3], vals.byteLength);
    await w.write(e, new Uint8Array(vals.buffer));
    await w.endEntry(e);
    const ints = new BigInt64Array([1n, -2n, 2n ** 62n]);
    const e2 = w.beginEntry("ints", "<i8", [3], ints.byteLength);
    await w.write(e2, new Uint8Array(ints.buffer));
    await w.endEntry(e2);
    const bools = new Uint8Array([1, 0, 1]);
    const e3 = w.beginEntry("flags", "|b1", [3], 3);
    await w.write(e3, bools);
    await w.endEntry(e3);
    await w.close();
    const got = readBack(path);
    expect(got.arrays.m?.values).toEqual([
      [1.5, -2, 3.25],
      [0, 1e10, -7],
    ]);
    expect(got.arrays.ints?.values).toEqual([1, -2, 2 ** 62]);
    expect(got.arrays.flags?.values).toEqual([true, false, true]);
  });

  test("renamed entries appear under their final key in zip names and numpy keys; others keep the provisional key", async () => {
    const path = join(dir, "renamed.npz");
    const w = await NpzWriter.create(path);
    const longest = `k${"x".repeat(MAX_KEY_LENGTH - 1)}`;
    const a = spec("tmp0", "<f4", [10]);
    const b = spec("tmp1", "<i8", [3]);
    const c = spec("tmp2", "|u1", [5]);
    const d = spec("tmp3", "<f8", [2, 2]);

    // Renamed while open, after end, twice, to the longest and the shortest key; one stays.
    const ea = w.beginEntry(a.key, a.descr, a.shape, a.data.length);
    w.rename(ea, "conv1.weight:out");
    await w.write(ea, a.data);
    await w.endEntry(ea);
    const eb = await writeEntry(w, b, "burst");
    const ec = await writeEntry(w, c, "awaited");
    await writeEntry(w, d, "one");
    w.rename(eb, "first_try");
    w.rename(eb, longest);
    w.rename(ec, "z");
    expect(eb.key).toBe(longest);
    await w.close();

    const finals = [
      { ...a, key: "conv1.weight:out" },
      { ...b, key: longest },
      { ...c, key: "z" },
      d,
    ];
    expectSame(readBack(path), finals);
    const unzip = unzipTest(path);
    if (unzip) expect(unzip).toMatchObject({ status: 0 });
  });

  test("entries larger than the batch size, split across flushes, keep their data and CRC", async () => {
    const path = join(dir, "large.npz");
    const w = await NpzWriter.create(path);
    const big = spec("big", "<f4", [Math.floor((BATCH_BYTES * 2 + 12345) / 4)]);
    const e = w.beginEntry(big.key, big.descr, big.shape, big.data.length);
    // Mixed: a burst of small pieces, one piece above the batch size, then awaited 64 KiB pieces.
    const d = big.data;
    const cut1 = 300_000;
    const cut2 = cut1 + BATCH_BYTES + 7;
    await Promise.all(pieces(d.subarray(0, cut1), 5000).map((p) => w.write(e, p)));
    await w.write(e, d.subarray(cut1, cut2));
    for (let at = cut2; at < d.length; at += 65536) await w.write(e, d.subarray(at, at + 65536));
    await w.endEntry(e);
    const small = spec("after", "<i2", [3]);
    await writeEntry(w, small, "one");
    await w.close();
    expectSame(readBack(path), [big, small]);
  });

  test("a piece buffer reused after its write promise resolves does not change data already written", async () => {
    const path = join(dir, "reuse.npz");
    const w = await NpzWriter.create(path);
    const chunk = 65536;
    const n = 40;
    const e = w.beginEntry("r", "|u1", [chunk * n], chunk * n);
    const buf = new Uint8Array(chunk);
    const expected = new Uint8Array(chunk * n);
    for (let i = 0; i < n; i++) {
      buf.fill(i);
      expected.fill(i, i * chunk, (i + 1) * chunk);
      await w.write(e, buf);
    }
    await w.endEntry(e);
    await w.close();
    expectSame(readBack(path), [{ key: "r", descr: "|u1", shape: [chunk * n], data: expected }]);
  });

  test("small archives use plain headers: no ZIP64 records, version 2.0 needed", async () => {
    const path = join(dir, "plain.npz");
    const w = await NpzWriter.create(path);
    await writeEntry(w, spec("a", "<f4", [100]), "one");
    await w.close();
    const buf = readFileSync(path);
    expect(findSignature(buf, 0x06064b50)).toEqual([]); // ZIP64 end record
    expect(buf.readUInt16LE(4)).toBe(20); // local header: version needed
    expect(buf.readUInt32LE(18)).not.toBe(0xffffffff); // sizes in the fixed fields
    // Raw data is 64-byte aligned in the file.
    const dataStart = 30 + buf.readUInt16LE(26) + buf.readUInt16LE(28) + 64;
    expect(dataStart % 64).toBe(0);
  });

  test("ZIP64 paths (big entry, offsets past the limit, ZIP64 end records) read back by numpy, zipfile and unzip", async () => {
    const path = join(dir, "zip64.npz");
    // Pretend the 32-bit limit is 3000 bytes: the first entry stays plain, the second is a
    // "4 GiB" entry, later ones sit past the limit, and so does the central directory.
    const w = await NpzWriter.create(path, { zip64Threshold: 3000 });
    const specs = [
      spec("plain", "<f4", [10]),
      spec("huge", "<f8", [1000]),
      spec("past_limit", "<i4", [5]),
      spec("scalar", "<c16", []),
      spec("empty", "|b1", [0]),
      spec("huge2", "|u1", [5000]),
    ];
    const entries: NpzEntry[] = [];
    for (const [i, s] of specs.entries())
      entries.push(await writeEntry(w, s, i % 2 ? "burst" : "awaited"));
    w.rename(entries[1] as NpzEntry, "huge_renamed");
    w.rename(entries[2] as NpzEntry, "past_limit_renamed_to_a_longer_name");
    await w.close();

    const buf = readFileSync(path);
    expect(findSignature(buf, 0x06064b50)).toHaveLength(1);
    expect(findSignature(buf, 0x07064b50)).toHaveLength(1);
    expect(buf.readUInt32LE(buf.length - 22 + 16)).toBe(0xffffffff); // EOCD: directory offset
    const finals = specs.map((s, i) =>
      i === 1
        ? { ...s, key: "huge_renamed" }
        : i === 2
          ? { ...s, key: "past_limit_renamed_to_a_longer_name" }
          : s,
    );
    expectSame(readBack(path), finals);
    const unzip = unzipTest(path);
    if (unzip) {
      expect(unzip.out).toMatch(/No errors detected/);
      expect(unzip.out).not.toMatch(/warning/i);
      expect(unzip).toMatchObject({ status: 0 });
    }
  });

  test("more than 65535 entries use the ZIP64 end record and all read back", async () => {
    const path = join(dir, "many.npz");
    const w = await NpzWriter.create(path);
    const n = 65_540;
    const one = new Uint8Array(1);
    for (let i = 0; i < n; i++) {
      const e = w.beginEntry(`a${i}`, "|u1", [1], 1);
      one[0] = i & 0xff;
      await w.write(e, one);
      await w.endEntry(e);
    }
    expect(await w.close()).toMatchObject({ entries: n });
    const out = execFileSync(
      PYTHON,
      [
        "-c",
        "import sys, numpy as np\nf = np.load(sys.argv[1])\nprint(len(f.files), int(f['a65539'][0]), int(f['a300'][0]))",
        path,
      ],
      { encoding: "utf8" },
    );
    expect(out.trim()).toBe(`${n} ${65539 & 0xff} ${300 & 0xff}`);
  }, 120_000);
});

describe("NpzWriter refuses misuse", () => {
  let w: NpzWriter;
  let path: string;
  beforeAll(async () => {
    path = join(dir, "misuse.npz");
    w = await NpzWriter.create(path);
  });
  afterAll(async () => {
    await w.abort();
  });

  test.each([
    ["", /empty/],
    ["a/b", /only letters/],
    ["a b", /only letters/],
    ["caf\u00e9", /only letters/],
    [".hidden", /starts with "\."/],
    ["a..b", /contains "\.\."/],
    ["x".repeat(MAX_KEY_LENGTH + 1), /longer than 200/],
  ])("bad key %j is refused by beginEntry and rename", async (key, why) => {
    expect(() => w.beginEntry(key, "<f4", [1], 4)).toThrow(why);
    expect(() => w.beginEntry(key, "<f4", [1], 4)).toThrow(NpzError);
    const e = w.beginEntry(`ok_${Math.random().toString(36).slice(2)}`, "<f4", [], 4);
    expect(() => w.rename(e, key)).toThrow(why);
    await w.write(e, new Uint8Array(4));
    await w.endEntry(e);
  });

  test("two entries renamed to one key: the second rename throws", async () => {
    const a = w.beginEntry("dup_a", "|u1", [0], 0);
    await w.endEntry(a);
    const b = w.beginEntry("dup_b", "|u1", [0], 0);
    await w.endEntry(b);
    w.rename(a, "same");
    expect(() => w.rename(b, "same")).toThrow(/duplicate npz key "same"/);
    w.rename(a, "same"); // renaming an entry to its own key is fine
  });

  test("a provisional key used twice throws at beginEntry", async () => {
    const a = w.beginEntry("twice", "|u1", [0], 0);
    await w.endEntry(a);
    expect(() => w.beginEntry("twice", "|u1", [0], 0)).toThrow(/duplicate npz key "twice"/);
  });

  test("beginEntry while another entry is open throws", async () => {
    const a = w.beginEntry("open_one", "|u1", [2], 2);
    expect(() => w.beginEntry("second", "|u1", [0], 0)).toThrow(/"open_one" is still open/);
    await w.write(a, new Uint8Array(2));
    await w.endEntry(a);
  });

  test("too few bytes fail endEntry; too many fail write", async () => {
    const a = w.beginEntry("short", "<f4", [4], 16);
    await w.write(a, new Uint8Array(12));
    await expect(w.endEntry(a)).rejects.toThrow(/"short": got 12 bytes, expected 16/);
    await expect(w.write(a, new Uint8Array(8))).rejects.toThrow(
      /got 20 bytes, more than the 16 announced/,
    );
    await w.write(a, new Uint8Array(4));
    await w.endEntry(a);
  });

  test("nbytes that disagrees with shape and dtype is refused", () => {
    expect(() => w.beginEntry("mismatch", "<f8", [2, 3], 24)).toThrow(/holds 48 bytes, not 24/);
  });

  test("writing to an entry that is not open is refused", async () => {
    const a = w.beginEntry("done", "|u1", [0], 0);
    await w.endEntry(a);
    await expect(w.write(a, new Uint8Array(1))).rejects.toThrow(/not the open entry/);
  });
});

describe("NpzWriter close and abort", () => {
  test("a final key clashing with another entry's provisional key fails close, which can be retried after a rename", async () => {
    const path = join(dir, "clash.npz");
    const w = await NpzWriter.create(path);
    const a = await writeEntry(w, spec("a", "|u1", [1]), "one");
    const b = await writeEntry(w, spec("b", "|u1", [2]), "one");
    w.rename(b, "a");
    await expect(w.close()).rejects.toThrow(/duplicate npz key "a"/);
    w.rename(a, "a_old");
    await w.close();
    expect(readBack(path).names).toEqual(["a_old.npy", "a.npy"]);
  });

  test("close with an entry still open throws", async () => {
    const path = join(dir, "open-at-close.npz");
    const w = await NpzWriter.create(path);
    w.beginEntry("x", "|u1", [1], 1);
    await expect(w.close()).rejects.toThrow(/"x" is still open/);
    await w.abort();
  });

  test("abort deletes the file, even with an entry open and pieces pending", async () => {
    const path = join(dir, "aborted.npz");
    const w = await NpzWriter.create(path);
    await writeEntry(w, spec("a", "<f4", [100]), "burst");
    const e = w.beginEntry("b", "<f4", [1000], 4000);
    const pending = w.write(e, new Uint8Array(100));
    expect(existsSync(path)).toBe(true);
    await w.abort();
    await pending.catch(() => {}); // either written or dropped; it must settle
    expect(existsSync(path)).toBe(false);
  });

  test("calls after close throw", async () => {
    const path = join(dir, "closed.npz");
    const w = await NpzWriter.create(path);
    await w.close();
    expect(() => w.beginEntry("a", "|u1", [0], 0)).toThrow(/already closed/);
    expect(readBack(path)).toMatchObject({ testzip: null, names: [] });
  });
});

test("immutablePieces: small pieces kept by reference still read back exactly with numpy", async () => {
  const { mkdtempSync, rmSync } = await import("node:fs");
  const os = await import("node:os");
  const pathMod = await import("node:path");
  const { execFileSync } = await import("node:child_process");
  const { NpzWriter } = await import("../../src/store/npz.js");
  const dir = mkdtempSync(pathMod.join(os.tmpdir(), "npz-immutable-"));
  try {
    const file = pathMod.join(dir, "a.npz");
    const w = await NpzWriter.create(file, { immutablePieces: true });
    const n = 300_000;
    const e = w.beginEntry("x", "<f4", [n], n * 4);
    const all = new Float32Array(n).map((_, i) => i * 0.5);
    const bytes = Buffer.from(all.buffer);
    for (let off = 0; off < bytes.length; off += 4096)
      await w.write(e, bytes.subarray(off, off + 4096));
    await w.endEntry(e);
    w.rename(e, "values");
    await w.close();
    const out = execFileSync(process.env.TORCHLENS_PYTHON || "/usr/bin/python3", [
      "-c",
      `import numpy as np; a = np.load(${JSON.stringify(file)})["values"]; print(int((a == np.arange(${n}, dtype=np.float32) * 0.5).all()))`,
    ]).toString();
    expect(out.trim()).toBe("1");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("placed entries: data another writer puts in the file (the agent's direct writes)", () => {
  /** The agent's rule (docs/wire.md, "Direct writes"): head room, then the next 64-byte boundary. */
  const placeAfter = (end: number, ndim: number) => Math.ceil((end + 448 + 32 * ndim) / 64) * 64;

  test("placed entries read back by numpy and zipfile, CRCs given after the fact, mixed with entries written through write()", async () => {
    for (const threshold of [undefined, 3000]) {
      const path = join(dir, `placed-${threshold ?? "plain"}.npz`);
      const w = await NpzWriter.create(path, { zip64Threshold: threshold });
      const other = openSync(path, "r+"); // another process's descriptor, as the agent's is
      const specs = [
        spec("direct_a", "<f4", [3, 50, 7]),
        spec("through_write", "<i8", [40]),
        spec("placed_small", "<f8", [5]),
        spec("direct_b", "|u1", [9000]),
        spec("empty", "<f4", [0, 3]),
      ];
      const later: [NpzEntry, number][] = [];
      let unwrittenHead: [number, number] = [0, 0];
      let end = w.nextOffset;
      for (const s of specs) {
        const direct = s.key.startsWith("direct");
        const at = s.key === "through_write" ? undefined : placeAfter(end, s.shape.length);
        if (s.key === "direct_a") {
          // placeWritten: its headers are written at close only
          const e = w.placeWritten(s.key, s.descr, s.shape, s.data.length, at as number);
          writeSync(other, s.data, 0, s.data.length, at);
          later.push([e, zlib.crc32(s.data)]);
          unwrittenHead = [end, (at as number) - end];
          end = w.nextOffset;
          continue;
        }
        const e = w.beginEntry(s.key, s.descr, s.shape, s.data.length, at);
        if (direct) {
          writeSync(other, s.data, 0, s.data.length, at);
          w.endWritten(e);
          later.push([e, zlib.crc32(s.data)]);
        } else {
          for (const p of pieces(s.data, 300)) await w.write(e, p);
          await w.endEntry(e);
        }
        end = w.nextOffset;
        if (at !== undefined) expect(at % 64).toBe(0);
      }
      closeSync(other);
      await new Promise((resolve) => setImmediate(resolve)); // every batch begun so far is out
      const [headAt, headLength] = unwrittenHead;
      const before = Buffer.alloc(headLength);
      const fd = openSync(path, "r");
      readSync(fd, before, 0, headLength, headAt);
      closeSync(fd);
      expect(before.every((b) => b === 0)).toBe(true); // placeWritten's headers: not yet
      for (const [e, crc] of later) w.setWrittenCrc(e, crc);
      w.rename(later[0]?.[0] as NpzEntry, "renamed_direct"); // the header rewrite keeps its late CRC
      await w.close();
      const renamed = [{ ...(specs[0] as Spec), key: "renamed_direct" }, ...specs.slice(1)];
      expectSame(readBack(path), renamed);
      const verdict = unzipTest(path);
      if (verdict) expect(verdict).toMatchObject({ status: 0 });
    }
  });

  test("a placed offset without room for the headers is refused, naming the room needed", async () => {
    const w = await NpzWriter.create(join(dir, "placed-tight.npz"));
    expect(() => w.beginEntry("a", "<f4", [4], 16, 64)).toThrow(
      /cannot start at offset 64: the headers need \d+ bytes/,
    );
    await w.abort();
  });

  test("close refuses an archive whose directly written entry never got its CRC", async () => {
    const path = join(dir, "placed-nocrc.npz");
    const w = await NpzWriter.create(path);
    const e = w.beginEntry("a", "<f4", [4], 16, placeAfter(0, 1));
    w.endWritten(e);
    w.placeWritten("b", "<f4", [4], 16, placeAfter(w.nextOffset, 1));
    await expect(w.close()).rejects.toThrow(
      /"a" was written by another writer and its CRC never came/,
    );
    w.setWrittenCrc(e, 0);
    await expect(w.close()).rejects.toThrow(
      /"b" was written by another writer and its CRC never came/,
    );
    await w.abort();
  });

  test("close cuts the blocks another writer reserved past the end, so the zip ends with its directory", async () => {
    const path = join(dir, "placed-reserved.npz");
    const w = await NpzWriter.create(path);
    const data = randomBytes(4096);
    const at = placeAfter(0, 1);
    const e = w.placeWritten("a", "|u1", [data.length], data.length, at);
    const other = openSync(path, "r+");
    writeSync(other, data, 0, data.length, at);
    writeSync(other, Buffer.alloc(1), 0, 1, at + (4 << 20)); // as the agent's fallocate ahead leaves it
    closeSync(other);
    w.setWrittenCrc(e, zlib.crc32(data));
    const { bytes } = await w.close();
    expect(readFileSync(path).length).toBe(bytes);
    expectSame(readBack(path), [{ key: "a", descr: "|u1", shape: [data.length], data }]);
  });
});

describe("crc32Combine", () => {
  test("equals zlib.crc32 of the concatenation for lengths 0 to a megabyte", () => {
    for (const [la, lb] of [
      [0, 0],
      [5, 0],
      [0, 9],
      [1, 1],
      [17, 300],
      [1000, 1 << 20],
    ] as const) {
      const a = randomBytes(la);
      const b = randomBytes(lb);
      expect(crc32Combine(zlib.crc32(a), zlib.crc32(b), lb)).toBe(
        zlib.crc32(Buffer.concat([a, b])),
      );
    }
  });

  test("is associative for lengths past 4 GiB (the operator's squarings beyond 32 bits)", () => {
    const [a, b, c] = [0x12345678, 0x9abcdef0, 0x0fedcba9];
    const lb = 5 * 2 ** 32 + 3;
    const lc = 2 ** 33 + 11;
    expect(crc32Combine(crc32Combine(a, b, lb), c, lc)).toBe(
      crc32Combine(a, crc32Combine(b, c, lc), lb + lc),
    );
  });
});
