/**
 * docs/log.schema.json and docs/manifest.schema.json against real runs: every fixture (and two
 * runs that reach fields the fixtures do not: odd dtypes, constants, non-tensor outputs, a
 * `--layers` selection) is extracted through the real CLI and agent, and its log.json and
 * manifest.json must validate under ajv's strict mode. Hand-broken copies must not.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import formats from "ajv-formats";
import { LOG_SCHEMA } from "../../src/log/types.js";
import { fixture, PASS_FIELDS, ROOT, tempDir, torchlens } from "../helpers/cli.js";
import { fixtureRunsHere } from "../helpers/torch.js";

// ajv-formats is CommonJS: its default export arrives as module.exports or as `.default`
const addFormats = ((formats as unknown as { default?: typeof formats }).default ??
  formats) as unknown as (ajv: Ajv2020) => void;

const logSchema = JSON.parse(readFileSync(path.join(ROOT, "docs/log.schema.json"), "utf8"));
const manifestSchema = JSON.parse(
  readFileSync(path.join(ROOT, "docs/manifest.schema.json"), "utf8"),
);

function compile(schema: object): ValidateFunction {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats(ajv);
  return ajv.compile(schema);
}

const validateLog = compile(logSchema);
const validateManifest = compile(manifestSchema);

/** Errors as short lines, so a failing run says which field is wrong. */
function problems(validate: ValidateFunction, value: unknown): string[] {
  if (validate(value)) return [];
  return (validate.errors ?? [])
    .slice(0, 20)
    .map((e) => `${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
}

const FIXTURE_NAMES = readdirSync(path.join(ROOT, "fixtures"))
  .filter((f) => f.endsWith(".py") && !f.startsWith("make_"))
  .map((f) => f.slice(0, -3))
  .filter(fixtureRunsHere) // torch2_*.py only under torch 2
  .sort();

/** A model that reaches what the fixtures do not: bfloat16 and complex arrays, a constant, a buffer, non-tensor outputs. */
const ODD_MODEL = `
import torch
from torch import nn

SCALE = torch.tensor([2.0, 3.0, 4.0, 5.0])


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("shift", torch.ones(4))

    def forward(self, x):
        h = self.lin(x) * SCALE + self.shift
        return [h.to(torch.bfloat16), torch.complex(h, h), h > 0, 3, {"none": None}]


def build_model():
    torch.manual_seed(0)
    return Odd().eval()


def example_input():
    return torch.randn(1, 4, generator=torch.Generator().manual_seed(0))
`;

interface Case {
  name: string;
  args: string[];
}

const tmp = tempDir("torchlens-schema-");
const cases: Case[] = [
  ...FIXTURE_NAMES.map((name) => {
    const input = fixture(`${name}_input.pt`);
    return {
      name,
      args: [fixture(`${name}.py`), ...(existsSync(input) ? ["--input", input] : [])],
    };
  }),
  { name: "odd (written for this test)", args: [path.join(tmp.dir, "odd.py")] },
  {
    name: "cnn --layers relu",
    args: [fixture("cnn.py"), "--input", fixture("cnn_input.pt"), "--layers", "relu"],
  },
  {
    name: "cnn --grads --param-grads",
    args: [fixture("cnn.py"), "--input", fixture("cnn_input.pt"), "--grads", "--param-grads"],
  },
  {
    name: "multi_io --grads --target output_1[1] --layers tanh,-1",
    args: [fixture("multi_io.py"), "--grads", "--target", "output_1[1]", "--layers", "tanh,-1"],
  },
];
const runDir = (i: number) => path.join(tmp.dir, `run${i}`);
const results: { exitCode: number | undefined; stderr: string }[] = [];

beforeAll(async () => {
  writeFileSync(path.join(tmp.dir, "odd.py"), ODD_MODEL);
  // two at a time: each is a Python process importing torch
  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const i = next++;
      const r = await torchlens(["extract", ...cases[i].args, "-o", runDir(i)]);
      results[i] = { exitCode: r.exitCode, stderr: String(r.stderr) };
    }
  };
  await Promise.all([worker(), worker()]);
}, 600_000);
afterAll(() => tmp.cleanup());

function read(i: number, file: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(runDir(i), file), "utf8"));
}

test("there are fixtures to check", () => {
  expect(FIXTURE_NAMES.length).toBeGreaterThanOrEqual(10);
  expect(FIXTURE_NAMES).not.toContain("make_inputs");
});

describe("the schemas name the version this torchlens writes", () => {
  test("log.schema.json's $id and `schema` constant are LOG_SCHEMA", () => {
    expect(logSchema.$id).toBe(LOG_SCHEMA);
    expect(logSchema.properties.schema.const).toBe(LOG_SCHEMA);
  });

  test("manifest.schema.json expects that log schema", () => {
    expect(manifestSchema.properties.schema.const).toBe(LOG_SCHEMA);
    expect(manifestSchema.$id).toBe(`torchlens.manifest/${LOG_SCHEMA.split("/")[1]}`);
  });

  test("every pass field DESIGN.md promises is required", () => {
    expect(logSchema.$defs.pass.required).toEqual(expect.arrayContaining(PASS_FIELDS));
  });

  test("every field is described", () => {
    const undescribed: string[] = [];
    const walk = (schema: Record<string, unknown>, where: string) => {
      const props = schema.properties as Record<string, Record<string, unknown>> | undefined;
      for (const [key, sub] of Object.entries(props ?? {})) {
        if (!sub.description && !sub.$ref) undescribed.push(`${where}.${key}`);
      }
    };
    walk(logSchema, "log");
    for (const [name, def] of Object.entries(
      logSchema.$defs as Record<string, Record<string, unknown>>,
    ))
      walk(def, name);
    walk(manifestSchema, "manifest");
    for (const [key, sub] of Object.entries(
      manifestSchema.properties as Record<string, Record<string, unknown>>,
    )) {
      if (sub.type === "object") walk(sub, `manifest.${key}`);
    }
    expect(undescribed).toEqual([]);
  });
});

describe.each(cases.map((c, i) => [c.name, i] as const))("real run: %s", (_name, i) => {
  test("extract succeeded", () => {
    expect(results[i]?.stderr).not.toMatch(/error/i);
    expect(results[i]?.exitCode).toBe(0);
  });

  test("log.json validates against docs/log.schema.json", () => {
    expect(problems(validateLog, read(i, "log.json"))).toEqual([]);
  });

  test("manifest.json validates against docs/manifest.schema.json", () => {
    expect(problems(validateManifest, read(i, "manifest.json"))).toEqual([]);
  });
});

describe("what the fixtures do not reach is really reached", () => {
  test("the odd run has a bfloat16 pass stored as float32, a constant, a buffer and value outputs", () => {
    const i = cases.findIndex((c) => c.name.startsWith("odd"));
    const log = read(i, "log.json") as {
      passes: { kind: string; dtype: string; stored_dtype: string | null }[];
      output_structure: unknown;
    };
    expect(log.passes.some((p) => p.dtype === "bfloat16" && p.stored_dtype === "<f4")).toBe(true);
    expect(log.passes.some((p) => p.dtype === "complex64" && p.stored_dtype === "<c8")).toBe(true);
    expect(log.passes.map((p) => p.kind)).toEqual(expect.arrayContaining(["constant", "buffer"]));
    expect(JSON.stringify(log.output_structure)).toMatch(/"kind":"value"/);
  });

  test("the gradient runs have saved gradients, passes without one, unrecorded ones and parameters", () => {
    const grads = cases
      .map((c, i) => [c, i] as const)
      .filter(([c]) => c.name.includes("--grads"))
      .map(
        ([, i]) =>
          read(i, "log.json") as {
            passes: { grad: { status: string } | null }[];
            gradients: { params: unknown[] };
          },
      );
    const statuses = grads.flatMap((log) => log.passes.map((p) => p.grad?.status ?? "null"));
    expect(new Set(statuses)).toEqual(new Set(["saved", "none", "null"]));
    expect(grads.some((log) => log.gradients.params.length > 0)).toBe(true);
  });

  test("the --layers run has unsaved passes", () => {
    const i = cases.findIndex((c) => c.name.includes("--layers"));
    const log = read(i, "log.json") as { passes: { saved: boolean }[] };
    expect(log.passes.some((p) => !p.saved)).toBe(true);
    expect(log.passes.some((p) => p.saved)).toBe(true);
  });
});

describe("the schemas reject what is not a log or manifest of this version", () => {
  // a real log and manifest, broken one way at a time
  // biome-ignore lint/suspicious/noExplicitAny: parsed JSON, broken by hand one field at a time
  type Json = Record<string, any>;
  const base = () => read(0, "log.json") as Json;
  const logBreaks: [string, (log: Json) => void][] = [
    [
      "an unknown top-level field",
      (l) => {
        l.extra_field = [];
      },
    ],
    [
      "an unknown pass field",
      (l) => {
        l.passes[1].colour = "red";
      },
    ],
    [
      "an unknown layer field",
      (l) => {
        l.layers[0].shape = [1];
      },
    ],
    [
      "an unknown module field",
      (l) => {
        l.modules[0].depth = 0;
      },
    ],
    [
      "an unknown module-call field",
      (l) => {
        l.modules[0].calls[0].extra = 1;
      },
    ],
    [
      "a missing top-level field",
      (l) => {
        delete l.layers;
      },
    ],
    [
      "a pass without its label",
      (l) => {
        delete l.passes[1].label;
      },
    ],
    [
      "a pass without parents",
      (l) => {
        delete l.passes[1].parents;
      },
    ],
    [
      "a layer without passes",
      (l) => {
        delete l.layers[0].passes;
      },
    ],
    [
      "another schema version",
      (l) => {
        l.schema = "torchlens.log/1";
      },
    ],
    [
      "a wrongly typed field",
      (l) => {
        l.passes[1].shape = "1x8";
      },
    ],
    [
      "an unknown kind",
      (l) => {
        l.passes[1].kind = "param";
      },
    ],
    [
      "an input pass not flagged as input",
      (l) => {
        l.passes[0].is_input = false;
      },
    ],
    [
      "an unsaved pass with an array",
      (l) => {
        l.passes[1].saved = false;
      },
    ],
    [
      "an input without input_path",
      (l) => {
        delete l.passes[0].input_path;
      },
    ],
  ];

  test("the unbroken log validates", () => {
    expect(problems(validateLog, base())).toEqual([]);
  });

  test.each(logBreaks)("log.json with %s fails", (_what, breakIt) => {
    const log = base();
    breakIt(log);
    expect(validateLog(log)).toBe(false);
  });

  const manifestBreaks: [string, (m: Json) => void][] = [
    [
      "an unknown field",
      (m) => {
        m.host = "x";
      },
    ],
    [
      "no status",
      (m) => {
        delete m.status;
      },
    ],
    [
      "a partial status without why",
      (m) => {
        m.status = "partial";
      },
    ],
    [
      "another log schema",
      (m) => {
        m.schema = "torchlens.log/0";
      },
    ],
    [
      "an unknown input kind",
      (m) => {
        m.input = { kind: "url" };
      },
    ],
    [
      "a date that is not a date",
      (m) => {
        m.created = "yesterday";
      },
    ],
  ];

  test.each(manifestBreaks)("manifest.json with %s fails", (_what, breakIt) => {
    const manifest = read(0, "manifest.json") as Json;
    expect(validateManifest(manifest)).toBe(true);
    breakIt(manifest);
    expect(validateManifest(manifest)).toBe(false);
  });
});
