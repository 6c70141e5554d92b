/**
 * Outputs are byte-identical to those recorded in test/golden: a change that moves code between
 * rooms must not change what a user or a pipeline sees.
 *
 * - test/golden/runs/NAME: run directories written by an earlier torchlens (extract of a fixture).
 *   ls, show, profile and graph read them, and their stdout, stderr and exit code must equal
 *   test/golden/out/NAME/*.txt byte for byte. They also prove that run directories the old code
 *   wrote are still read.
 * - A fresh extract of the same fixture must give the golden run's log.json and npz entries, the
 *   manifest and summary in test/golden/out/NAME, and validate the same report, up to what differs
 *   between any two runs (times, dates, paths, the Python's location), which `normalize` blanks. These cases run only under the torch that made
 *   the golden runs (their manifests name it): another torch records other ops.
 *
 * TORCHLENS_GOLDEN_WRITE=1 npx jest test/e2e/outputs.test.ts rewrites test/golden/out from the
 * current code (=runs remakes the runs too); do that only for a change that means to alter outputs,
 * and say so in the commit and in CHANGELOG.md.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fixture, python, ROOT, tempDir, torchlens, torchlensBytes } from "../helpers/cli.js";
import { TORCH_VERSION } from "../helpers/torch.js";

const GOLDEN = path.join(ROOT, "test/golden");
const RUNS = path.join(GOLDEN, "runs");
const WRITE = ["1", "runs"].includes(process.env.TORCHLENS_GOLDEN_WRITE ?? "");
/** TORCHLENS_GOLDEN_WRITE=runs also remakes the golden runs; they are otherwise kept as the
 * earlier torchlens wrote them, so that reading them proves old runs are still read. */
const WRITE_RUNS = process.env.TORCHLENS_GOLDEN_WRITE === "runs";

/** Each golden run: the fixture, the extract flags, and the commands that read it. */
const CASES: { name: string; model: string; flags: string[]; reads: string[][] }[] = [
  {
    name: "two_loops",
    model: "two_loops",
    flags: ["--input", fixture("two_loops_input.pt")],
    reads: [
      ["ls"],
      ["ls", "--json"],
      ["ls", "--by", "layer"],
      ["ls", "--by", "layer", "--json"],
      ["ls", "--modules"],
      ["ls", "--modules", "--json"],
      ["ls", "--layers", "tanh,b@out"],
      ["show", "relu_1_2:2"],
      ["show", "relu_1_2"],
      ["show", "linear_1_1:3", "--json"],
      ["show", "output_1", "--npy"],
      ["profile"],
      ["profile", "--by", "layer"],
      ["profile", "--by", "module"],
      ["profile", "--json"],
      ["graph", "-o", "-"],
      ["graph", "--unrolled", "-o", "-"],
      ["graph", "--unrolled", "--layers", "tanh", "--direction", "LR", "-o", "-"],
      ["show", "relu_9_9"],
    ],
  },
  {
    name: "cnn",
    model: "cnn",
    flags: ["--input", fixture("cnn_input.pt")],
    reads: [
      ["ls"],
      ["ls", "--modules"],
      ["ls", "--by", "layer", "--json"],
      ["show", "conv2d_1_1"],
      ["show", "batch_norm_1_2", "--json"],
      ["profile", "--by", "module", "--json"],
      ["profile", "--top", "0"],
      ["graph", "-o", "-"],
      ["graph", "--unrolled", "--depth", "1", "-o", "-"],
    ],
  },
  {
    name: "shared_branches",
    model: "shared_branches",
    flags: ["--input", fixture("shared_branches_input.pt")],
    reads: [["ls"], ["ls", "--modules"], ["profile", "--by", "layer"], ["graph", "-o", "-"]],
  },
  {
    // a selection that needs final labels: a dry run, then the saving forward
    name: "two_loops_selected",
    model: "two_loops",
    flags: ["--input", fixture("two_loops_input.pt"), "--layers", "relu_1_2:2,-1"],
    reads: [["ls"], ["ls", "--layers", "relu_1_2"], ["show", "relu_1_2:2"], ["show", "relu_1_2:1"]],
  },
];

/** A file name for a command's output: `ls --by layer` → `ls_by_layer.txt`. */
function outName(args: string[]): string {
  return `${args
    .join("_")
    .replace(/[^A-Za-z0-9_.:@,-]+/g, "")
    .replace(/[:@,.]/g, "-")
    .replace(/_+/g, "_")}.txt`;
}

/** What a command shows, as one text: exit code, stdout (hex for binary), stderr. */
function transcript(res: {
  exitCode?: number;
  stdout: string | Uint8Array;
  stderr: string | Uint8Array;
}) {
  const out = typeof res.stdout === "string" ? res.stdout : Buffer.from(res.stdout).toString("hex");
  const err = typeof res.stderr === "string" ? res.stderr : Buffer.from(res.stderr).toString();
  return `exit ${res.exitCode}\n--- stdout\n${out}\n--- stderr\n${err}\n`;
}

const VOLATILE_NUMBERS = new Set([
  "time_ms",
  "wall_ms",
  "forward_ms",
  "saved_ms",
  "agent_cpu_ms",
  "first_op_ms",
]);

/** Blank what differs between two runs of the same extract: times, dates, paths, the Python. */
function normalize(value: unknown, key = ""): unknown {
  if (Array.isArray(value)) return value.map((v) => normalize(v));
  if (value && typeof value === "object")
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v, k)]));
  if (VOLATILE_NUMBERS.has(key) && typeof value === "number") return 0;
  if (["created", "executable", "python", "platform", "run", "file", "path"].includes(key))
    return typeof value === "string" ? "<blank>" : value;
  return value;
}

function normalizedManifest(file: string) {
  const m = normalize(JSON.parse(readFileSync(file, "utf8"))) as Record<string, unknown>;
  m.command = "<blank>";
  return m;
}

/** The npz's entries as name, CRC-32 and size (the zip's own timestamps differ run to run). */
async function npzEntries(file: string): Promise<string> {
  const res = await python([
    "-c",
    "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(i.filename, i.CRC, i.file_size)",
    file,
  ]);
  expect(res.exitCode).toBe(0);
  return res.stdout;
}

function expectSame(file: string, actual: string): void {
  if (WRITE) {
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, actual);
    return;
  }
  expect(existsSync(file)).toBe(true);
  expect(actual).toBe(readFileSync(file, "utf8"));
}

const goldenTorch = (name: string): string | null => {
  const file = path.join(RUNS, name, "manifest.json");
  return existsSync(file) ? JSON.parse(readFileSync(file, "utf8")).agent.torch : null;
};

/**
 * A fresh log written in the goldens' schema: torchlens.log/2 is /1 with the top-level `gradients`
 * and each pass's `grad` added (docs/run-directory.md, Versioning), both null without --grads; so
 * a fresh /2 log of a golden /1 run is that run's log exactly, once those nulls are taken out.
 */
function asSchemaOf(log: Record<string, unknown>, schema: string): Record<string, unknown> {
  if (schema !== "torchlens.log/1" || log.schema !== "torchlens.log/2") return log;
  const { gradients, ...rest } = log;
  expect(gradients).toBeNull();
  const passes = (rest.passes as Record<string, unknown>[]).map(({ grad, ...p }) => {
    expect(grad).toBeNull();
    return p;
  });
  return { ...rest, schema, passes };
}

describe("a fresh extract and validate give the goldens' log, manifest, arrays and report", () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  for (const c of CASES) {
    const torch = goldenTorch(c.name);
    const here = WRITE || torch === TORCH_VERSION;
    const name = `${c.name}: extract ${c.flags.filter((f) => !f.includes("/")).join(" ")}, then validate${here ? "" : ` (skipped: the goldens were made under torch ${torch}, this is ${TORCH_VERSION})`}`;
    (here ? test : test.skip)(name, async () => {
      const run = WRITE_RUNS ? path.join(RUNS, c.name) : path.join(tmp.dir, c.name);
      if (WRITE_RUNS) rmSync(run, { recursive: true, force: true });
      const res = await torchlens([
        "extract",
        fixture(`${c.model}.py`),
        ...c.flags,
        "-o",
        run,
        "--json",
      ]);
      expect(res.exitCode).toBe(0);
      const out = path.join(GOLDEN, "out", c.name);
      expectSame(
        path.join(out, "extract-summary.json"),
        `${JSON.stringify(normalize(JSON.parse(res.stdout)), null, 1)}\n`,
      );
      expectSame(
        path.join(out, "manifest.json"),
        `${JSON.stringify(normalizedManifest(path.join(run, "manifest.json")), null, 1)}\n`,
      );
      if (!WRITE_RUNS) {
        const golden = path.join(RUNS, c.name);
        const fresh = JSON.parse(readFileSync(path.join(run, "log.json"), "utf8"));
        const old = JSON.parse(readFileSync(path.join(golden, "log.json"), "utf8"));
        expect(normalize(asSchemaOf(fresh, old.schema))).toEqual(normalize(old));
        expect(await npzEntries(path.join(run, "activations.npz"))).toBe(
          await npzEntries(path.join(golden, "activations.npz")),
        );
        expect(readdirSync(run).sort()).toEqual(readdirSync(golden).sort());
      }
      const validated = await torchlens(["validate", run, "--json"]);
      expect(validated.exitCode).toBe(0);
      expectSame(
        path.join(out, "validate-report.json"),
        `${JSON.stringify(normalize(JSON.parse(validated.stdout)), null, 1)}\n`,
      );
      const told = await torchlens(["validate", run]);
      const stderr = told.stderr
        .replaceAll(path.relative(ROOT, run), "<run>")
        .replaceAll(run, "<run>")
        .replaceAll(ROOT, "<root>");
      expectSame(path.join(out, "validate-text.txt"), transcript({ ...told, stderr }));
    });
  }
});

describe("reading runs an earlier torchlens wrote: output byte-identical to the goldens", () => {
  // with TORCHLENS_GOLDEN_WRITE=1 the runs read here were just made by the cases above
  for (const c of CASES) {
    test.each(c.reads.map((args) => [args.join(" "), args] as const))(
      `${c.name}: torchlens %s`,
      async (_, args) => {
        const [command, ...rest] = args;
        const opts = { cwd: RUNS, env: { COLUMNS: "120", NO_COLOR: "1" } };
        const res = rest.includes("--npy")
          ? await torchlensBytes([command, c.name, ...rest], opts)
          : await torchlens([command, c.name, ...rest], opts);
        expectSame(path.join(GOLDEN, "out", c.name, outName(args)), transcript(res));
      },
    );
  }
});
