/**
 * The .npz reader against archives written by numpy (np.savez, np.savez_compressed, hand-built
 * zips with .npy v2/v3 headers) and by our own NpzWriter (renames, ZIP64 paths), then damaged on
 * purpose. Needs Debian's /usr/bin/python3 with numpy.
 */
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { EXIT, TorchlensError } from "../../src/errors.js";
import { type NpzEntry, NpzWriter } from "../../src/store/npz.js";
import { NpzReadError } from "../../src/store/npzErrors.js";
import { NpzReader } from "../../src/store/npzRead.js";

const PYTHON = "/usr/bin/python3";

function py(script: string, ...args: string[]): string {
  return execFileSync(PYTHON, ["-c", script, ...args], { encoding: "utf8", maxBuffer: 64 << 20 });
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

interface Meta {
  descr: string;
  shape: number[];
  fortran: boolean;
  sha: string;
}

/** Arrays of every dtype and layout numpy writes, saved with np.savez; prints keys and metadata. */
const SAVEZ = `
import hashlib, json, sys
import numpy as np
rng = np.random.default_rng(0)
arrays = {
    "f4_2d": rng.standard_normal((3, 5)).astype(np.float32),
    "f8_scalar": np.array(3.5),
    "f2": rng.standard_normal(7).astype(np.float16),
    "i1": rng.integers(-128, 127, 9, dtype=np.int8),
    "i2": rng.integers(-30000, 30000, (2, 3), dtype=np.int16),
    "i4": rng.integers(-2**31, 2**31 - 1, 4, dtype=np.int32),
    "i8": np.array([-2**63, 2**63 - 1, 0, 12345], dtype=np.int64),
    "u1": np.arange(256, dtype=np.uint8),
    "u2": np.arange(10, dtype=np.uint16),
    "u4": np.array([0, 2**32 - 1], dtype=np.uint32),
    "u8": np.array([0, 2**64 - 1], dtype=np.uint64),
    "b1": rng.integers(0, 2, (4, 4)).astype(bool),
    "c8": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
    "c16": rng.standard_normal(4) + 1j * rng.standard_normal(4),
    "empty_0x3": np.zeros((0, 3), np.float32),
    "fortran_3d": np.asfortranarray(np.arange(24, dtype=np.int16).reshape(2, 3, 4)),
    "fortran_c16": np.asfortranarray(rng.standard_normal((3, 2)) + 2j),
    "big_endian": np.arange(5, dtype=">f4"),
    "unicode": np.array(["ab", "c"], dtype="<U3"),
    "conv2d_1_1": np.ones((2, 2), np.float32),
    "conv2d_1_2": np.zeros(3, np.float32),
    "linear_2_3:2": np.full(4, 7, np.int32),
    "sub/dir.key": np.arange(3, dtype=np.float64),
}
np.savez(sys.argv[1], **arrays)
meta = {k: {"descr": a.dtype.str, "shape": list(a.shape),
            "fortran": bool(a.flags.f_contiguous and not a.flags.c_contiguous),
            "sha": hashlib.sha256(a.tobytes()).hexdigest()} for k, a in arrays.items()}
print(json.dumps({"keys": list(arrays), "meta": meta}))
`;

let dir: string;
let numpyNpz: string;
let numpyKeys: string[];
let numpyMeta: Record<string, Meta>;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "npzread-test-"));
  numpyNpz = join(dir, "activations.npz");
  const out = JSON.parse(py(SAVEZ, numpyNpz)) as { keys: string[]; meta: Record<string, Meta> };
  numpyKeys = out.keys;
  numpyMeta = out.meta;
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Expects `p` to reject with an NpzReadError (exit 2) whose message matches `re`. */
async function expectReadError(p: Promise<unknown>, re: RegExp): Promise<NpzReadError> {
  const err = await p.then(
    () => {
      throw new Error(`expected an NpzReadError matching ${re}, got success`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(NpzReadError);
  expect(err).toBeInstanceOf(TorchlensError);
  const e = err as NpzReadError;
  expect(e.exitCode).toBe(EXIT.usage);
  expect(e.message).toMatch(re);
  return e;
}

describe("NpzReader on np.savez archives", () => {
  test("keys come out in archive order, without the .npy suffix", async () => {
    const r = await NpzReader.open(numpyNpz);
    expect(r.keys()).toEqual(numpyKeys);
    expect(r.has("linear_2_3:2")).toBe(true);
    expect(r.has("linear_2_3:2.npy")).toBe(false);
    await r.close();
  });

  test("every dtype and layout: descr, shape and C-order bytes equal numpy's tobytes()", async () => {
    const r = await NpzReader.open(numpyNpz);
    for (const key of numpyKeys) {
      const m = numpyMeta[key] as Meta;
      const { info, data } = await r.read(key);
      expect({ key, descr: info.descr, shape: info.shape, fortran: info.fortranOrder }).toEqual({
        key,
        descr: m.descr,
        shape: m.shape,
        fortran: m.fortran,
      });
      expect({ key, sha: sha(data) }).toEqual({ key, sha: m.sha });
      expect(info.dataBytes).toBe(data.length);
      expect(info.dataOffset + info.dataBytes).toBe(info.npyOffset + info.npyBytes);
    }
    await r.close();
  });

  test("Fortran-order arrays (np.asfortranarray) are reordered to C order by read()", async () => {
    const r = await NpzReader.open(numpyNpz);
    const { info, data } = await r.read("fortran_3d");
    expect(info.fortranOrder).toBe(true);
    expect(Array.from(new Int16Array(data.buffer, data.byteOffset, 24))).toEqual(
      Array.from({ length: 24 }, (_, i) => i),
    );
    await r.close();
  });

  test("verify() is true for every intact entry (CRC-32 of the stored bytes)", async () => {
    const r = await NpzReader.open(numpyNpz);
    for (const key of numpyKeys)
      expect({ key, ok: await r.verify(key) }).toEqual({ key, ok: true });
    await r.close();
  });

  test("verify() turns false after one byte of the data region is flipped", async () => {
    const r0 = await NpzReader.open(numpyNpz);
    const info = await r0.info("f4_2d");
    await r0.close();
    const bytes = readFileSync(numpyNpz);
    bytes[info.dataOffset + 7] = (bytes[info.dataOffset + 7] as number) ^ 0x10;
    const flipped = join(dir, "flipped.npz");
    writeFileSync(flipped, bytes);
    const r = await NpzReader.open(flipped);
    expect(await r.verify("f4_2d")).toBe(false);
    expect(await r.verify("f8_scalar")).toBe(true);
    await r.close();
  });

  test("npyStream output, written to files, loads with np.load and equals each array", async () => {
    const r = await NpzReader.open(numpyNpz);
    const keys = numpyKeys.filter((k) => !k.includes("/"));
    for (const [i, key] of keys.entries()) {
      await pipeline(r.npyStream(key), createWriteStream(join(dir, `stream_${i}.npy`)));
    }
    await r.close();
    const out = py(
      `
import json, sys
import numpy as np
d, npz, keys = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
bad = []
with np.load(npz) as f:
    for i, k in enumerate(keys):
        a = np.load(f"{d}/stream_{i}.npy")
        b = f[k]
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            bad.append(k)
print(json.dumps(bad))
`,
      dir,
      numpyNpz,
      JSON.stringify(keys),
    );
    expect(JSON.parse(out)).toEqual([]);
  });

  test("npyStream piped into a process's stdin (as `show --npy | python` does) loads with np.load", async () => {
    const r = await NpzReader.open(numpyNpz);
    const child = spawn(
      PYTHON,
      [
        "-c",
        "import io, sys, numpy as np\na = np.load(io.BytesIO(sys.stdin.buffer.read()))\nprint(a.dtype.str, a.shape, a.sum())",
      ],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    let stdout = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
    });
    const exited = new Promise<number | null>((res) => child.on("close", res));
    await pipeline(r.npyStream("fortran_3d"), child.stdin);
    expect(await exited).toBe(0);
    expect(stdout.trim()).toBe(`<i2 (2, 3, 4) ${(23 * 24) / 2}`);
    await r.close();
  });

  test("npyStream of an unknown key fails through the stream's error event", async () => {
    const r = await NpzReader.open(numpyNpz);
    await expectReadError(
      pipeline(r.npyStream("nope"), createWriteStream(join(dir, "x.npy"))),
      /no array "nope"/,
    );
    await r.close();
  });
});

describe("NpzReader on .npy format versions 2.0 and 3.0", () => {
  test("entries with v1, v2 and v3 headers (np.lib.format.write_array) read back", async () => {
    const path = join(dir, "versions.npz");
    const out = py(
      `
import hashlib, io, json, sys, zipfile
import numpy as np
arrays = {"v1": ((1, 0), np.arange(6, dtype=np.float32).reshape(2, 3)),
          "v2": ((2, 0), np.arange(4, dtype=np.int64)),
          "v3": ((3, 0), np.array([1.5, -2.0]))}
meta = {}
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for k, (v, a) in arrays.items():
        b = io.BytesIO()
        np.lib.format.write_array(b, a, version=v)
        z.writestr(k + ".npy", b.getvalue())
        meta[k] = {"major": v[0], "sha": hashlib.sha256(a.tobytes()).hexdigest(), "shape": list(a.shape)}
print(json.dumps(meta))
`,
      path,
    );
    const meta = JSON.parse(out) as Record<string, { major: number; sha: string; shape: number[] }>;
    const bytes = readFileSync(path);
    const r = await NpzReader.open(path);
    for (const key of ["v1", "v2", "v3"]) {
      const { info, data } = await r.read(key);
      const m = meta[key] as { major: number; sha: string; shape: number[] };
      expect({ key, major: bytes[info.npyOffset + 6], shape: info.shape, sha: sha(data) }).toEqual({
        key,
        major: m.major,
        shape: m.shape,
        sha: m.sha,
      });
    }
    await r.close();
  });
});

describe("NpzReader on archives from our NpzWriter", () => {
  /** Writes entries; renames some after writing; returns the final keys and data. */
  async function writeArchive(path: string, zip64Threshold?: number) {
    const w = await NpzWriter.create(path, zip64Threshold ? { zip64Threshold } : {});
    const specs = [
      {
        key: "tmp0",
        descr: "<f4",
        shape: [10],
        data: Buffer.from(new Float32Array(10).map((_, i) => i * 1.5).buffer),
      },
      {
        key: "tmp1",
        descr: "<f8",
        shape: [1000],
        data: Buffer.from(new Float64Array(1000).map((_, i) => -i).buffer),
      },
      {
        key: "tmp2",
        descr: "<i4",
        shape: [5],
        data: Buffer.from(new Int32Array([1, -2, 3, -4, 5]).buffer),
      },
      { key: "kept", descr: "<c16", shape: [], data: Buffer.from(new Float64Array([1, 2]).buffer) },
      { key: "tmp4", descr: "|b1", shape: [0], data: Buffer.alloc(0) },
      {
        key: "tmp5",
        descr: "|u1",
        shape: [50, 100],
        data: Buffer.from(Array.from({ length: 5000 }, (_, i) => i & 0xff)),
      },
    ];
    const entries: NpzEntry[] = [];
    for (const s of specs) {
      const e = w.beginEntry(s.key, s.descr, s.shape, s.data.length);
      await w.write(e, s.data);
      await w.endEntry(e);
      entries.push(e);
    }
    const finals = ["conv2d_1_1", "linear_2_2:3", "a", "kept", "empty_bool", "x".repeat(200)];
    finals.forEach((k, i) => {
      if (k !== specs[i]?.key) w.rename(entries[i] as NpzEntry, k);
    });
    await w.close();
    return specs.map((s, i) => ({ ...s, key: finals[i] as string }));
  }

  test.each([
    ["plain ZIP", undefined],
    [
      "ZIP64 (threshold lowered to 3000 bytes: big entries, offsets and directory past the limit)",
      3000,
    ],
  ])(
    "%s: entries renamed after writing read back under their final keys, same bytes, CRC ok",
    async (_name, threshold) => {
      const path = join(dir, `ours-${threshold ?? "plain"}.npz`);
      const specs = await writeArchive(path, threshold);
      const r = await NpzReader.open(path);
      expect(r.keys()).toEqual(specs.map((s) => s.key));
      expect(r.has("tmp0")).toBe(false);
      for (const s of specs) {
        const { info, data } = await r.read(s.key);
        expect({ key: s.key, descr: info.descr, shape: info.shape }).toEqual({
          key: s.key,
          descr: s.descr,
          shape: s.shape,
        });
        expect(data.equals(s.data)).toBe(true);
        expect(info.dataOffset % 64).toBe(0); // our writer aligns raw data
        expect(await r.verify(s.key)).toBe(true);
      }
      await r.close();
    },
  );

  test("an entry whose local header name differs from the central directory is reported as damage", async () => {
    const path = join(dir, "ours-local-name.npz");
    const specs = await writeArchive(path);
    const bytes = readFileSync(path);
    // The first entry's local header sits at offset 0; its name starts at byte 30.
    expect(bytes.toString("latin1", 30, 30 + 10)).toBe("conv2d_1_1");
    bytes[30] = "k".charCodeAt(0);
    writeFileSync(path, bytes);
    const r = await NpzReader.open(path);
    await expectReadError(
      r.info(specs[0]?.key as string),
      /damaged: .*"conv2d_1_1\.npy" is named "konv2d_1_1\.npy" in its local header/,
    );
    await expectReadError(r.verify(specs[0]?.key as string), /local header/);
    expect(await r.verify(specs[1]?.key as string)).toBe(true);
    await r.close();
  });
});

describe("NpzReader refuses what it can't or mustn't read", () => {
  test("a missing file is a clear error, exit code 2", async () => {
    await expectReadError(
      NpzReader.open(join(dir, "nowhere", "activations.npz")),
      /does not exist/,
    );
  });

  test("a truncated archive (cut in half) is 'damaged — re-run extract'", async () => {
    const bytes = readFileSync(numpyNpz);
    const path = join(dir, "half", "activations.npz");
    execFileSync("mkdir", ["-p", join(dir, "half")]);
    writeFileSync(path, bytes.subarray(0, bytes.length >> 1));
    await expectReadError(
      NpzReader.open(path),
      /^activations\.npz is damaged: .* — re-run extract$/,
    );
  });

  test("an archive missing its last byte, or with bytes cut from the middle, is damaged", async () => {
    const bytes = readFileSync(numpyNpz);
    const a = join(dir, "lastbyte.npz");
    writeFileSync(a, bytes.subarray(0, bytes.length - 1));
    await expectReadError(NpzReader.open(a), /damaged/);
    const b = join(dir, "middle.npz");
    writeFileSync(b, Buffer.concat([bytes.subarray(0, 500), bytes.subarray(600)]));
    await expectReadError(NpzReader.open(b), /damaged/);
  });

  test("a file that is not a zip at all is damaged, as is an empty one", async () => {
    const a = join(dir, "text.npz");
    writeFileSync(a, "hello, this is not a zip archive\n".repeat(10));
    await expectReadError(NpzReader.open(a), /damaged: no zip end record/);
    const b = join(dir, "empty.npz");
    writeFileSync(b, "");
    await expectReadError(NpzReader.open(b), /damaged: .*too short/);
  });

  test("np.savez_compressed entries are listed but reading one says only stored entries are read", async () => {
    const path = join(dir, "compressed.npz");
    py(
      "import sys, numpy as np\nnp.savez_compressed(sys.argv[1], a=np.arange(100.0), b=np.ones(3))",
      path,
    );
    const r = await NpzReader.open(path);
    expect(r.keys()).toEqual(["a", "b"]);
    const e = await expectReadError(
      r.read("a"),
      /"a\.npy" .* is compressed \(deflate\); torchlens reads only stored \(uncompressed\) entries/,
    );
    expect(e.hint).toMatch(/np\.savez/);
    await expectReadError(r.verify("b"), /compressed/);
    await r.close();
  });

  test("an unknown key names up to 5 close keys, or the array count when none is close", async () => {
    const r = await NpzReader.open(numpyNpz);
    const e = await expectReadError(
      r.info("conv2d_1_3"),
      /no array "conv2d_1_3" in activations\.npz; close keys: conv2d_1_1, conv2d_1_2/,
    );
    expect(e.hint).toMatch(/torchlens ls/);
    await expectReadError(
      r.read("completely_unrelated_name"),
      new RegExp(`holds ${numpyKeys.length} arrays\\)$`),
    );
    await r.close();

    const path = join(dir, "many.npz");
    py(
      "import sys, numpy as np\nnp.savez(sys.argv[1], **{f'relu_{i}': np.zeros(1) for i in range(1, 9)})",
      path,
    );
    const r2 = await NpzReader.open(path);
    const e2 = await expectReadError(r2.info("relu_9"), /close keys/);
    expect(e2.message.split("close keys: ")[1]?.split(", ")).toHaveLength(5);
    await r2.close();
  });

  test.each([
    ["../evil", /climbs out of its directory/],
    ["/tmp/ev", /absolute path/],
    ["C:/evil", /absolute path/],
  ])("an entry named %j (escaping a directory) makes open refuse the archive", async (name, re) => {
    const path = join(dir, `escape-${name.replace(/\W/g, "_")}.npz`);
    py("import sys, numpy as np\nnp.savez(sys.argv[1], xxxxxxx=np.zeros(2), ok=np.ones(1))", path);
    // Same length, patched in both the local header and the central directory.
    const bytes = readFileSync(path);
    const from = Buffer.from("xxxxxxx.npy");
    let n = 0;
    for (let i = bytes.indexOf(from); i >= 0; i = bytes.indexOf(from, i + 1), n++)
      bytes.write(`${name}.npy`, i, "latin1");
    expect(n).toBe(2);
    writeFileSync(path, bytes);
    await expectReadError(NpzReader.open(path), re);
  });

  test("an object array is refused: nothing is ever unpickled", async () => {
    const path = join(dir, "object.npz");
    py(
      "import sys, numpy as np\nnp.savez(sys.argv[1], obj=np.array([{'a': 1}, None], dtype=object), fine=np.ones(2))",
      path,
    );
    const r = await NpzReader.open(path);
    await expectReadError(r.read("obj"), /holds Python objects .*never unpickles/);
    expect((await r.read("fine")).data.length).toBe(16);
    await r.close();
  });

  test("a .npy header that can't be parsed, or whose shape disagrees with the entry size, is damage", async () => {
    const path = join(dir, "badheader.npz");
    py("import sys, numpy as np\nnp.savez(sys.argv[1], a=np.zeros(4), b=np.zeros(4))", path);
    const bytes = readFileSync(path);
    const patch = (from: string, to: string, nth: number) => {
      let i = -1;
      for (let k = 0; k <= nth; k++) i = bytes.indexOf(from, i + 1, "latin1");
      expect(i).toBeGreaterThanOrEqual(0);
      bytes.write(to, i, "latin1");
    };
    patch("'fortran_order'", "'fortran_ordeX'", 0); // entry a
    patch("'descr': '<f8'", "'descr': '<f4'", 1); // entry b: 4 float32 need 16 bytes, it holds 32
    writeFileSync(path, bytes);
    const r = await NpzReader.open(path);
    await expectReadError(
      r.info("a"),
      /damaged: the \.npy header of "a\.npy" can't be parsed: expected keys/,
    );
    await expectReadError(
      r.read("b"),
      /damaged: "b\.npy" has shape \(4\) of <f4, which needs 16 bytes, but the entry holds 32/,
    );
    await r.close();
  });

  test("methods after close() throw a clear error", async () => {
    const r = await NpzReader.open(numpyNpz);
    await r.close();
    await expectReadError(r.info("f4_2d"), /already closed/);
  });
});
