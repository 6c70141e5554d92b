/**
 * arrayStats against numpy: arrays of every supported dtype (with NaN, Inf, zeros, extremes, empty
 * and 0-d) are saved with np.savez, read back with NpzReader, and their statistics compared with
 * np.nanmin / np.nanmax / np.nanmean / np.nanstd and counts computed by numpy. Needs Debian's
 * /usr/bin/python3 with numpy.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { type ArrayStats, arrayStats } from "../../src/stats/arrayStats.js";
import { NpzReader } from "../../src/store/npzRead.js";

const PYTHON = "/usr/bin/python3";

function py(script: string, ...args: string[]): string {
  return execFileSync(PYTHON, ["-c", script, ...args], { encoding: "utf8", maxBuffer: 64 << 20 });
}

/**
 * Reference statistics, computed by numpy in float64 (complex: over |z| of the complex128 value).
 * numpy's own nanmean of float16/float32 accumulates in that precision; the float64 reference is
 * what an exact computation gives (the 50M-element test below also compares with numpy's defaults).
 */
const REFS = `
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
nan, inf = np.nan, np.inf
rng = np.random.default_rng(1)

def mixed(dtype, n=1000, scale=10.0):
    a = (rng.standard_normal(n) * scale).astype(dtype)
    a[::97] = 0
    a[5], a[50], a[51], a[500] = nan, inf, -inf, nan
    return a

arrays = {
    "f2_mixed": np.concatenate([mixed(np.float16), np.array([6.0e-8, -6.0e-8, 65504, -65504, 1e-5], np.float16)]),
    "f4_mixed": mixed(np.float32).reshape(10, 100),
    "f8_mixed": mixed(np.float64, scale=1e6),
    "f8_all_nan": np.full(7, nan),
    "f4_only_inf": np.array([inf, -inf, inf], np.float32),
    "f8_offset": rng.standard_normal(100_000) + 1e9,
    "f4_empty": np.zeros(0, np.float32),
    "f8_empty_3x0": np.zeros((3, 0)),
    "f4_scalar": np.array(2.5, np.float32),
    "i8_scalar": np.array(-7, np.int64),
    "i1": rng.integers(-128, 128, 5000, dtype=np.int8),
    "i2": rng.integers(-2**15, 2**15, 5000, dtype=np.int16),
    "i4": rng.integers(-2**31, 2**31, 5000, dtype=np.int32),
    "u1": rng.integers(0, 256, 5000, dtype=np.uint8),
    "u2": rng.integers(0, 2**16, 5000, dtype=np.uint16),
    "u4": rng.integers(0, 2**32, 5000, dtype=np.uint32),
    "i8_large": np.concatenate([np.array([-2**63, 2**63 - 1, 2**53 + 1, -(2**53) - 1, 0], np.int64),
                                rng.integers(-2**62, 2**62, 5000, dtype=np.int64)]),
    "u8_large": np.concatenate([np.array([2**64 - 1, 2**63, 2**53 + 1, 0], np.uint64),
                                rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64)]),
    "b1": rng.integers(0, 2, 9999).astype(bool),
    "b1_empty": np.zeros(0, bool),
    "c8": (rng.standard_normal(3000) + 1j * rng.standard_normal(3000)).astype(np.complex64),
    "c16_special": np.array([complex(nan, 1), complex(inf, nan), complex(1, -inf), 0j, complex(-0.0, 0.0),
                             complex(1e-200, 1e-200), 3 - 4j]),
    "c16_huge": np.array([complex(1e200, 1e200), complex(-1e200, 1e200)]),
}
np.savez(sys.argv[1], **arrays)

def ref(a):
    x = np.abs(a.astype(np.complex128)) if a.dtype.kind == "c" else a.astype(np.float64)
    x = x.ravel()
    fin = np.isfinite(x)
    none = not fin.any()
    r = {
        "count": int(a.size),
        "min": None if none else float(np.nanmin(np.where(fin, x, nan))),
        "max": None if none else float(np.nanmax(np.where(fin, x, nan))),
        "mean": None if none else float(np.nanmean(np.where(fin, x, nan))),
        "std": None if none else float(np.nanstd(np.where(fin, x, nan))),
        "nan": int(np.isnan(x).sum()),
        "posinf": int((x == inf).sum()),
        "neginf": int((x == -inf).sum()),
        "zeros": int((x == 0).sum()),
    }
    if a.dtype.kind == "c":
        r["over"] = "magnitude"
    if a.dtype.kind == "b":
        r["trues"] = int(a.sum())
    return r

print(json.dumps({k: {"descr": a.dtype.str, "ref": ref(a)} for k, a in arrays.items()}, allow_nan=False))
`;

type Ref = ArrayStats;

/** |got - want| within `rel` of the reference's own scale (mean near 0 is judged against std). */
function expectClose(
  what: string,
  got: number | null,
  want: number | null,
  scale: number,
  rel: number,
): void {
  if (want === null || got === null) {
    expect({ what, got }).toEqual({ what, got: want });
    return;
  }
  const tol = rel * Math.max(Math.abs(want), scale);
  if (!(Math.abs(got - want) <= tol)) {
    throw new Error(`${what}: got ${got}, numpy says ${want} (tolerance ${tol})`);
  }
}

let dir: string;
let npz: string;
let refs: Record<string, { descr: string; ref: Ref }>;
let reader: NpzReader;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "arraystats-test-"));
  npz = join(dir, "stats.npz");
  refs = JSON.parse(py(REFS, npz));
  reader = await NpzReader.open(npz);
});
afterAll(async () => {
  await reader?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function statsOf(key: string): Promise<{ got: ArrayStats; want: Ref }> {
  const { info, data } = await reader.read(key);
  const r = refs[key];
  if (!r) throw new Error(`no reference for ${key}`);
  expect(info.descr).toBe(r.descr);
  return { got: arrayStats(info.descr, data), want: r.ref };
}

/**
 * Counts exact; min/max exact (complex: to 1 ulp, as |z| may round differently from numpy's
 * hypot); mean and std to `rel` of their scale.
 */
async function expectMatchesNumpy(key: string, rel = 1e-12): Promise<void> {
  const { got, want } = await statsOf(key);
  const { mean, std, min, max, ...exact } = got;
  const { mean: wMean, std: wStd, min: wMin, max: wMax, ...wExact } = want;
  expect({ key, ...exact }).toEqual({ key, ...wExact });
  if (got.over === "magnitude") {
    expectClose(`${key} min`, min, wMin, 0, 3e-16);
    expectClose(`${key} max`, max, wMax, 0, 3e-16);
  } else expect({ key, min, max }).toEqual({ key, min: wMin, max: wMax });
  const spread = wStd ?? 0;
  expectClose(`${key} mean`, mean, wMean, spread, rel);
  expectClose(`${key} std`, std, wStd, 0, rel);
}

describe("arrayStats agrees with numpy", () => {
  test.each(["f2_mixed", "f4_mixed", "f8_mixed"])(
    "%s: NaN/Inf are counted and left out of min/max/mean/std; zeros counted",
    async (key) => {
      await expectMatchesNumpy(key);
      const { got } = await statsOf(key);
      expect(got.nan).toBe(2);
      expect(got.posinf).toBeGreaterThanOrEqual(1);
      expect(got.neginf).toBeGreaterThanOrEqual(1);
    },
  );

  test("float16 extremes (subnormal 6e-8, ±65504) decode by bits to numpy's values", async () => {
    const { got, want } = await statsOf("f2_mixed");
    expect(got.max).toBe(65504);
    expect(got.min).toBe(-65504);
    expect(got.min).toBe(want.min);
  });

  test("all-NaN and only-Inf arrays give null min/max/mean/std with the counts", async () => {
    await expectMatchesNumpy("f8_all_nan");
    await expectMatchesNumpy("f4_only_inf");
    const { got } = await statsOf("f4_only_inf");
    expect(got).toMatchObject({ count: 3, min: null, mean: null, std: null, posinf: 2, neginf: 1 });
  });

  test("std is numerically stable when the mean (1e9) dwarfs the spread (1)", async () => {
    await expectMatchesNumpy("f8_offset", 1e-12);
    const { got } = await statsOf("f8_offset");
    expect(got.std).toBeGreaterThan(0.9);
    expect(got.std).toBeLessThan(1.1);
  });

  test.each(["f4_empty", "f8_empty_3x0", "b1_empty"])(
    "%s: empty arrays give count 0 and nulls",
    async (key) => {
      await expectMatchesNumpy(key);
      const { got } = await statsOf(key);
      expect(got).toMatchObject({
        count: 0,
        min: null,
        max: null,
        mean: null,
        std: null,
        nan: 0,
        zeros: 0,
      });
    },
  );

  test("0-d arrays (shape []) count one element; std 0", async () => {
    await expectMatchesNumpy("f4_scalar");
    await expectMatchesNumpy("i8_scalar");
    const { got } = await statsOf("f4_scalar");
    expect(got).toMatchObject({ count: 1, min: 2.5, max: 2.5, mean: 2.5, std: 0 });
  });

  test.each(["i1", "i2", "i4", "u1", "u2", "u4"])(
    "%s: integers of every width and sign",
    async (key) => {
      await expectMatchesNumpy(key);
    },
  );

  test.each(["i8_large", "u8_large"])(
    "%s: 64-bit integers near the limits (±2^63, 2^64-1, 2^53+1) convert like numpy's float64",
    async (key) => {
      await expectMatchesNumpy(key);
    },
  );

  test("bool: trues counted, stats over 0/1, zeros are the falses", async () => {
    await expectMatchesNumpy("b1");
    const { got } = await statsOf("b1");
    expect(got.zeros + (got.trues as number)).toBe(got.count);
    expect(got.mean).toBeCloseTo((got.trues as number) / got.count, 12);
  });

  test("complex: stats over the magnitude, marked over: 'magnitude'", async () => {
    await expectMatchesNumpy("c8");
  });

  test("complex special values: an Inf part gives +Inf magnitude even beside NaN; no underflow at 1e-200", async () => {
    await expectMatchesNumpy("c16_special");
    const { got } = await statsOf("c16_special");
    expect(got).toMatchObject({
      nan: 1,
      posinf: 2,
      neginf: 0,
      zeros: 2,
      over: "magnitude",
      max: 5,
    });
    expect(got.mean).toBeGreaterThan(0);
  });

  test("complex magnitudes of 1e200 parts don't overflow to Inf (re² + im² would)", async () => {
    await expectMatchesNumpy("c16_huge");
    const { got } = await statsOf("c16_huge");
    expect(got).toMatchObject({ posinf: 0, std: 0 });
    expect((got.max as number) / (Math.SQRT2 * 1e200)).toBeCloseTo(1, 14);
  });
});

describe("arrayStats decoding and input handling", () => {
  test("every one of the 65536 float16 bit patterns decodes to numpy's float64 value", () => {
    const path = join(dir, "f16.bin");
    py(
      "import sys, numpy as np\nopen(sys.argv[1], 'wb').write(np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float64).tobytes())",
      path,
    );
    const raw = readFileSync(path);
    const want = new Float64Array(raw.buffer, raw.byteOffset, 65536);
    const one = Buffer.alloc(2);
    const bad: string[] = [];
    for (let h = 0; h < 65536; h++) {
      one.writeUInt16LE(h);
      const s = arrayStats("<f2", one);
      const w = want[h] as number;
      const ok = Number.isNaN(w)
        ? s.nan === 1
        : w === Number.POSITIVE_INFINITY
          ? s.posinf === 1
          : w === Number.NEGATIVE_INFINITY
            ? s.neginf === 1
            : Object.is(s.min, w);
      if (!ok && bad.length < 5)
        bad.push(`0x${h.toString(16)}: numpy ${w}, got ${JSON.stringify(s)}`);
    }
    expect(bad).toEqual([]);
  });

  test("an unaligned buffer (odd byteOffset) gives the same stats as an aligned one", () => {
    const vals = new Float64Array([1.5, -2, Number.NaN, 1e10, 0, 3]);
    const aligned = Buffer.from(vals.buffer);
    const slab = Buffer.alloc(aligned.length + 1);
    aligned.copy(slab, 1);
    const unaligned = slab.subarray(1);
    expect(unaligned.byteOffset % 8).not.toBe(0);
    for (const [descr, bytes] of [
      ["<f8", aligned],
      ["<f4", aligned],
      ["<i8", aligned],
      ["<u2", aligned],
      ["<c16", aligned.subarray(0, 32)],
      ["<c8", aligned],
    ] as const) {
      const slab2 = Buffer.alloc(bytes.length + 3);
      bytes.copy(slab2, 3);
      expect({ descr, stats: arrayStats(descr, slab2.subarray(3)) }).toEqual({
        descr,
        stats: arrayStats(descr, bytes),
      });
    }
    expect(arrayStats("<f8", unaligned)).toEqual(arrayStats("<f8", aligned));
    expect(arrayStats("<f8", aligned)).toMatchObject({
      count: 6,
      nan: 1,
      zeros: 1,
      min: -2,
      max: 1e10,
    });
  });

  test.each([">f4", "<U3", "|O", "<f16", "float32", "<b1"])(
    "unsupported dtype %j is refused with the list of supported ones",
    (descr) => {
      expect(() => arrayStats(descr, Buffer.alloc(16))).toThrow(
        /can't compute statistics of dtype .*supported are <f2 <f4/,
      );
    },
  );

  test("a byte count that is not a multiple of the item size is refused", () => {
    expect(() => arrayStats("<f4", Buffer.alloc(6))).toThrow(/not a multiple of its item size 4/);
  });
});

describe("arrayStats at scale", () => {
  test("50M float32 elements (with NaN/Inf): mean and std within 1e-6 of numpy's nanmean/nanstd", async () => {
    const path = join(dir, "big.npz");
    const out = py(
      `
import json, sys, warnings
import numpy as np
rng = np.random.default_rng(7)
a = rng.standard_normal(50_000_000, dtype=np.float32) * 2 + 3
a[::1_000_003] = np.nan
a[17] = np.inf
np.savez(sys.argv[1], big=a)
x = np.where(np.isfinite(a), a, np.nan)
x64 = x.astype(np.float64)  # nanstd(x, dtype=float64) would still hold deviations in float32
print(json.dumps({"mean": float(np.nanmean(x)), "std": float(np.nanstd(x)),
                  "mean64": float(np.nanmean(x64)), "std64": float(np.nanstd(x64)),
                  "min": float(np.nanmin(x)), "max": float(np.nanmax(x)), "nan": int(np.isnan(a).sum())}))
`,
      path,
    );
    const want = JSON.parse(out) as Record<string, number>;
    const r = await NpzReader.open(path);
    const { data } = await r.read("big");
    await r.close();
    const got = arrayStats("<f4", data);
    expect(got).toMatchObject({
      count: 50_000_000,
      nan: want.nan,
      posinf: 1,
      neginf: 0,
      min: want.min,
      max: want.max,
    });
    // numpy's float32 defaults (pairwise sums in float32), and numpy over the values as float64.
    expectClose("mean vs numpy float32", got.mean, want.mean as number, 0, 1e-6);
    expectClose("std vs numpy float32", got.std, want.std as number, 0, 1e-6);
    expectClose("mean vs numpy float64", got.mean, want.mean64 as number, 0, 1e-12);
    expectClose("std vs numpy float64", got.std, want.std64 as number, 0, 1e-12);
  }, 120_000);
});
