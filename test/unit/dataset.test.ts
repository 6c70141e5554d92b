/** The dataset's pure parts: batches and shards, the identity check, the rows' shapes, --check's
 * choice of rows, the Slurm job script. */
import { pickRows } from "../../src/dataset/check.js";
import type { DatasetIdentity, DatasetIndex } from "../../src/dataset/layout.js";
import {
  addToRanges,
  layerFile,
  type Ranges,
  rangeCount,
  rangeItems,
} from "../../src/dataset/layout.js";
import type { DatasetOptions } from "../../src/dataset/options.js";
import { identityChange } from "../../src/dataset/options.js";
import { layerOf } from "../../src/dataset/prepare.js";
import {
  batchAt,
  batchCount,
  formatRanges,
  parseShard,
  shardBatches,
  slurmShard,
} from "../../src/dataset/shards.js";
import { jobScript, shellWord } from "../../src/dataset/slurm.js";
import type { Pass } from "../../src/log/types.js";

describe("batches and shards", () => {
  test("batches cover every row once, the last one short", () => {
    expect(batchCount(100, 32)).toBe(4);
    expect([0, 1, 2, 3].map((i) => batchAt(i, 100, 32))).toEqual([
      { index: 0, start: 0, stop: 32 },
      { index: 1, start: 32, stop: 64 },
      { index: 2, start: 64, stop: 96 },
      { index: 3, start: 96, stop: 100 },
    ]);
  });

  test.each([
    [10, 3],
    [16, 16],
    [3, 7],
    [1000, 17],
  ])(
    "%i batches in %i shards: contiguous, disjoint, covering all, sizes within one",
    (batches, n) => {
      const ranges = Array.from({ length: n }, (_, i) => shardBatches({ k: i + 1, n }, batches));
      expect(ranges[0].first).toBe(0);
      expect(ranges[n - 1].last).toBe(batches);
      for (let i = 1; i < n; i++) expect(ranges[i].first).toBe(ranges[i - 1].last);
      const sizes = ranges.map((r) => r.last - r.first);
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    },
  );

  test("--shard K/N is parsed, and a shard outside 1..N is a usage error naming the range", () => {
    expect(parseShard("3/16")).toEqual({ k: 3, n: 16 });
    expect(() => parseShard("0/4")).toThrow(/shard 0 is outside 1\.\.4/);
    expect(() => parseShard("5/4")).toThrow(/shard 5 is outside 1\.\.4/);
    expect(() => parseShard("3")).toThrow(/is not K\/N/);
  });

  test("a Slurm array task's shard comes from its task id counted from the array's first", () => {
    expect(slurmShard({})).toBeNull();
    const env = (id: number, min: number, count: number) => ({
      SLURM_ARRAY_TASK_ID: String(id),
      SLURM_ARRAY_TASK_COUNT: String(count),
      SLURM_ARRAY_TASK_MIN: String(min),
      SLURM_ARRAY_TASK_MAX: String(min + count - 1),
    });
    expect(slurmShard(env(1, 1, 16))).toEqual({ k: 1, n: 16 });
    expect(slurmShard(env(15, 0, 16))).toEqual({ k: 16, n: 16 });
    expect(() =>
      slurmShard({
        SLURM_ARRAY_TASK_ID: "7",
        SLURM_ARRAY_TASK_COUNT: "2",
        SLURM_ARRAY_TASK_MIN: "3",
        SLURM_ARRAY_TASK_MAX: "7",
      }),
    ).toThrow(/not one contiguous range/);
  });

  test("ranges are written compactly", () => {
    expect(formatRanges([1, 2, 3, 5, 7, 8])).toBe("1-3,5,7-8");
    expect(formatRanges([])).toBe("");
  });
});

const identity: DatasetIdentity = {
  model: { sha256: "a".repeat(64), name: null },
  stimuli: { count: 10, fingerprint: "f" },
  options: {
    layers: ["relu"],
    batch_size: 4,
    dtype: null,
    flatten: false,
    pool: null,
    preset: null,
    size: null,
    seed: 0,
    grad: false,
  },
};

describe("one dataset per directory", () => {
  test("the same command is the same dataset", () => {
    expect(identityChange(identity, structuredClone(identity))).toBe("");
  });

  test("each kind of change is named: model, stimuli count, stimuli files, an option", () => {
    expect(
      identityChange(identity, { ...identity, model: { sha256: "b".repeat(64), name: null } }),
    ).toMatch(/model file differs/);
    expect(
      identityChange(identity, { ...identity, stimuli: { count: 11, fingerprint: "f" } }),
    ).toMatch(/10 stimuli, and there are 11/);
    expect(
      identityChange(identity, { ...identity, stimuli: { count: 10, fingerprint: "g" } }),
    ).toMatch(/stimuli changed/);
    expect(
      identityChange(identity, { ...identity, options: { ...identity.options, batch_size: 8 } }),
    ).toMatch(/--batch-size 4, and this command gives 8/);
  });
});

const pass = (shape: number[], dtype = "float32") =>
  ({
    label: "relu_1_2:3",
    id: 7,
    shape,
    dtype,
    stored_dtype: null,
    module: "features.2",
    func: "relu",
  }) as unknown as Pass;
const opts = (o: Partial<DatasetOptions>) =>
  ({ pool: null, flatten: false, dtype: null, ...o }) as DatasetOptions;

describe("a selected pass's rows", () => {
  test("the batch dimension becomes N; the file name has no colon", () => {
    expect(layerOf(pass([4, 8, 5, 5]), 4, opts({}), 100)).toMatchObject({
      shape: [100, 8, 5, 5],
      descr: "<f4",
      dtype: "float32",
      file: "layers/relu_1_2-3.npy",
      pool: null,
    });
    expect(layerFile("linear_1_2:3")).toBe("layers/linear_1_2-3.npy");
  });

  test("--pool mean keeps the channels of a map and leaves a vector as it is; --flatten makes one vector", () => {
    expect(layerOf(pass([4, 8, 5, 5]), 4, opts({ pool: "mean" }), 100)).toMatchObject({
      shape: [100, 8],
      pool: "mean",
    });
    expect(layerOf(pass([4, 10]), 4, opts({ pool: "mean" }), 100)).toMatchObject({
      shape: [100, 10],
      pool: null,
    });
    expect(layerOf(pass([4, 8, 5, 5]), 4, opts({ flatten: true }), 100).shape).toEqual([100, 200]);
  });

  test("rows keep the pass's dtype (bfloat16 as float32); --dtype casts; pooled integer passes become float64", () => {
    expect(layerOf(pass([4, 8], "bfloat16"), 4, opts({}), 9)).toMatchObject({ descr: "<f4" });
    expect(layerOf(pass([4, 8], "int32"), 4, opts({}), 9)).toMatchObject({ descr: "<i4" });
    expect(layerOf(pass([4, 8]), 4, opts({ dtype: "float16" }), 9)).toMatchObject({
      descr: "<f2",
      dtype: "float16",
    });
    expect(layerOf(pass([4, 8, 2, 2], "int64"), 4, opts({ pool: "mean" }), 9)).toMatchObject({
      descr: "<f8",
    });
  });

  test("a pass whose first dimension is not the batch is refused with the reason", () => {
    expect(() => layerOf(pass([]), 4, opts({}), 9)).toThrow(/has no batch dimension/);
    expect(() => layerOf(pass([16, 3]), 4, opts({}), 9)).toThrow(/has no batch dimension/);
  });
});

describe("--check's rows", () => {
  const index = { stimuli: { count: 100 }, batches: { size: 10 } } as DatasetIndex;
  test("the same seed picks the same rows, within the done batches, bad rows left out", () => {
    const a = pickRows(index, [2, 5], new Set([21]), 5, 0);
    expect(a).toEqual(pickRows(index, [5, 2], new Set([21]), 5, 0));
    expect(a.length).toBe(5);
    for (const r of a) expect((r >= 20 && r < 30) || (r >= 50 && r < 60)).toBe(true);
    expect(a).not.toContain(21);
    expect(pickRows(index, [2, 5], new Set(), 5, 1)).not.toEqual(a);
    expect(pickRows(index, [0], new Set(), 50, 0).length).toBe(10);
  });
});

describe("the Slurm job script", () => {
  test("one array task per unfinished shard, each given its shard explicitly, words quoted", () => {
    const script = jobScript(
      "/data/out dir",
      ["/usr/bin/node", "/opt/tl/bin/torchlens.js", "dataset", "/m.py", "-o", "/data/out dir"],
      [1, 2, 3, 7],
      8,
    );
    expect(script).toMatch(/^#!\/bin\/bash\n/);
    expect(script).toMatch(/#SBATCH --array=1-3,7\n/);
    expect(script).toMatch(/#SBATCH --output=\/data\/out dir\/slurm\/%A_%a\.log/);
    expect(script).toMatch(
      /exec \/usr\/bin\/node \/opt\/tl\/bin\/torchlens\.js dataset \/m\.py -o '\/data\/out dir' --shard "\$\{SLURM_ARRAY_TASK_ID\}\/8"/,
    );
    expect(shellWord("it's")).toBe(`'it'\\''s'`);
  });
});

describe("a progress record's done batches", () => {
  test("are kept as merged ranges whatever the order they arrive in", () => {
    const r: Ranges = [];
    for (const i of [0, 1, 2, 7, 5, 6, 3, 3, 10]) addToRanges(r, i);
    expect(r).toEqual([
      [0, 4],
      [5, 8],
      [10, 11],
    ]);
    addToRanges(r, 4);
    expect(r).toEqual([
      [0, 8],
      [10, 11],
    ]);
    expect(rangeCount(r)).toBe(9);
    expect(rangeItems([[2, 4]])).toEqual([2, 3]);
  });
});
