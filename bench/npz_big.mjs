// Writes a 4.5 GiB array (plus small ones before and after it) through NpzWriter, reports GB/s,
// then checks the archive with Debian's Python: zipfile.testzip(), the big array's shape, and every
// row streamed from the zip and compared, and the small arrays through numpy.load.
// Needs `npx tsc -p tsconfig.build.json` first. Usage: node bench/npz_big.mjs
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, statfsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NpzWriter } from "../dist/store/npz.js";

const PYTHON = "/usr/bin/python3";
const ROW_BYTES = 64 << 20; // the reused buffer: one row of the big array
const ROWS = 72; // 72 x 64 MiB = 4.5 GiB
const COLS = ROW_BYTES / 4;
const BIG_BYTES = ROWS * ROW_BYTES;

const tmp = tmpdir();
const fs = statfsSync(tmp);
const free = fs.bavail * fs.bsize;
if (free < BIG_BYTES + (1 << 30)) {
  console.log(`npz_big: skipped, ${(free / 2 ** 30).toFixed(1)} GiB free in ${tmp}, need 5.5`);
  process.exit(0);
}
const dir = mkdtempSync(join(tmp, "npz-big-"));
const path = join(dir, "big.npz");

try {
  // Row r holds [r, 1, 2, ..., COLS-1] as <u4: the first element tells where the row landed.
  const row = new Uint32Array(COLS);
  for (let i = 0; i < COLS; i++) row[i] = i;
  const rowBytes = new Uint8Array(row.buffer);

  const small = async (w, key, descr, shape, typed) => {
    const e = w.beginEntry(key, descr, shape, typed.byteLength);
    await w.write(e, new Uint8Array(typed.buffer));
    await w.endEntry(e);
    return e;
  };

  const t0 = performance.now();
  const w = await NpzWriter.create(path);
  await small(w, "before", "<f4", [2, 3], new Float32Array([1, 2, 3, 4, 5, 6.5]));
  const big = w.beginEntry("tmp_big", "<u4", [ROWS, COLS], BIG_BYTES);
  for (let r = 0; r < ROWS; r++) {
    row[0] = r;
    await w.write(big, rowBytes);
  }
  await w.endEntry(big);
  // These land past 4 GiB: their central headers need ZIP64 offsets.
  const after = await small(w, "tmp_after", "<i8", [3], new BigInt64Array([-1n, 0n, 2n ** 40n]));
  await small(w, "scalar", "<f8", [], new Float64Array([Math.PI]));
  w.rename(big, "features.3:out");
  w.rename(after, "after_big");
  const { entries, bytes } = await w.close();
  const writeS = (performance.now() - t0) / 1000;

  const check = `
import sys, zipfile
import numpy as np
path, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with zipfile.ZipFile(path) as z:
    assert z.testzip() is None, "testzip found a bad CRC"
    names = z.namelist()
    assert names == ["before.npy", "features.3:out.npy", "after_big.npy", "scalar.npy"], names
    with z.open("features.3:out.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, fortran, dtype = read_header(f)
        assert (shape, fortran, dtype.str) == ((rows, cols), False, "<u4"), (shape, fortran, dtype)
        expected = np.arange(cols, dtype="<u4")
        for r in range(rows):
            got = np.frombuffer(f.read(cols * 4), dtype="<u4")
            expected[0] = r
            assert np.array_equal(got, expected), f"row {r} differs"
        assert f.read(1) == b""
f = np.load(path)
assert f["before"].tolist() == [[1, 2, 3], [4, 5, 6.5]]
assert f["after_big"].tolist() == [-1, 0, 2**40]
assert float(f["scalar"]) == np.pi
print("ok")
`;
  const t1 = performance.now();
  const out = execFileSync(PYTHON, ["-c", check, path, String(ROWS), String(COLS)], {
    encoding: "utf8",
  }).trim();
  const checkS = (performance.now() - t1) / 1000;
  if (out !== "ok") throw new Error(`python check said: ${out}`);
  console.log(
    `npz_big: ${entries} entries, ${(bytes / 1e9).toFixed(2)} GB (one ${ROWS}x${COLS} <u4 array of 4.5 GiB from a reused 64 MiB buffer) ` +
      `written in ${writeS.toFixed(2)} s = ${(bytes / 1e9 / writeS).toFixed(2)} GB/s; ` +
      `zipfile testzip + all ${ROWS} rows + numpy.load OK in ${checkS.toFixed(1)} s (Node ${process.versions.node})`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
