/**
 * What only torch 2 has, through the real CLI: every fixtures/torch2_*.py (fused attention,
 * torch.compile, torch.func, hooks that change values, output classes) is extracted and
 * validated; validation must pass, the recorded graph must be whole (no `constant` where a tensor
 * was made inside forward: the sign of a call torchlens did not see), and the output passes must
 * be there, one per output tensor, at the paths the model returns them.
 *
 * Skipped, saying so, where the Python in use has a torch older than 2 (scripts/test.sh runs
 * this file under .venv-torch2's torch 2). The fixtures' inputs are their example_input().
 */
import { readdirSync } from "node:fs";
import path from "node:path";
import type { Pass, RunLog } from "../../src/log/types.js";
import { fixture, PYTHON, ROOT, tempDir } from "../helpers/cli.js";
import {
  expectConnected,
  expectValid,
  extractAndValidate as extractAndValidateTo,
  type Outcome,
} from "../helpers/runs.js";
import { HAS_TORCH2, TORCH_VERSION as TORCH } from "../helpers/torch.js";

const tmp = tempDir("torchlens-torch2-test-");
afterAll(() => tmp.cleanup());

/** extract (the file's example_input()) then validate into tmp/NAME. */
const extractAndValidate = (name: string): Promise<Outcome> =>
  extractAndValidateTo(path.join(tmp.dir, name), fixture(`${name}.py`));

const passesOf = (log: RunLog, func: string, module?: string): Pass[] =>
  log.passes.filter((p) => p.func === func && (module === undefined || p.module === module));

const parentFuncs = (log: RunLog, p: Pass): string[] => {
  const byLabel = new Map(log.passes.map((x) => [x.label, x]));
  return p.parents.map((label) => byLabel.get(label)?.func ?? "?");
};

interface Expectation {
  /** output_path of each output pass, in the order the model returns them */
  outputs: string[];
  /** what else the log must show */
  check?: (log: RunLog) => void;
}

const EXPECT: Record<string, Expectation> = {
  torch2_sdpa: {
    outputs: ["out"],
    check: (log) => {
      const sdpa = passesOf(log, "scaled_dot_product_attention", "attn");
      expect(sdpa).toHaveLength(2);
      // q, k, v (and the mask, for the second call) are its parents
      expect(sdpa.map((p) => p.parents.length)).toEqual([3, 4]);
      expect(passesOf(log, "masked_fill", "attn")).toHaveLength(1);
    },
  },
  torch2_compiled: {
    outputs: ["out"],
    check: (log) => {
      // the compiled submodule's and the compiled function's ops, each one seen
      expect(passesOf(log, "linear").map((p) => p.module)).toEqual([
        "embed",
        "block._orig_mod.fc1",
        "block._orig_mod.fc2",
        "head",
      ]);
      expect(passesOf(log, "gelu")).toHaveLength(1);
      expect(passesOf(log, "tanh")).toHaveLength(1);
      expect(passesOf(log, "sigmoid")).toHaveLength(1);
    },
  },
  torch2_func: {
    outputs: ["out"],
    check: (log) => {
      // functional_call: the inner layer runs on weights computed in forward, its parents
      const [inner] = passesOf(log, "linear", "inner");
      expect(inner).toBeDefined();
      expect(parentFuncs(log, inner).sort()).toEqual(["__add__", "__add__", "__mul__"]);
      expect(inner.params).toEqual([]);
    },
  },
  torch2_hooks: {
    outputs: ["out"],
    check: (log) => {
      // the hooks' ops are inside the hooked modules' calls
      expect(passesOf(log, "__mul__", "first")).toHaveLength(1); // the pre-hook's doubling
      expect(passesOf(log, "full_like", "first")).toHaveLength(1); // the forward hook's shift
      expect(passesOf(log, "sigmoid", "gated")).toHaveLength(1); // the kwargs pre-hook's gate
      const [clamp] = passesOf(log, "clamp", "gated"); // the kwargs forward hook, last of all
      expect(clamp).toBeDefined();
      expect(log.passes.find((p) => p.is_output)?.parents).toEqual([clamp.label]);
    },
  },
  torch2_output_dataclass: { outputs: ["out.logits", "out.hidden.0", "out.hidden.1"] },
  torch2_output_namedtuple: { outputs: ["out.0", "out.1.0", "out.1.1"] },
  torch2_output_modeloutput: {
    outputs: [
      "out.last_hidden_state",
      "out.pooler_output",
      "out.hidden_states.0",
      "out.hidden_states.1",
    ],
  },
};

/** Every torch 2 fixture, each with its expectations. */
const TORCH2 = readdirSync(path.join(ROOT, "fixtures"))
  .filter((f) => /^torch2_.*\.py$/.test(f))
  .map((f) => f.slice(0, -3))
  .sort();

test("every torch 2 fixture has its expectations here", () => {
  expect(TORCH2).toEqual(Object.keys(EXPECT).sort());
});

const title = HAS_TORCH2
  ? `under torch ${TORCH}`
  : `skipped: the Python in use (${PYTHON}) has torch ${TORCH || "(none)"}, these need torch 2`;
(HAS_TORCH2 ? describe : describe.skip)(title, () => {
  describe.each(TORCH2)("%s", (name) => {
    let outcome: Promise<Outcome> | null = null;
    const once = () => {
      outcome ??= extractAndValidate(name);
      return outcome;
    };
    test("extracts and validates", async () => expectValid(await once()), 120_000);
    test(
      "records a whole graph: no constants, every output reached from an input",
      async () => expectConnected(await once()),
      120_000,
    );
    test("has one output pass per output tensor, at its path, and what the fixture is about", async () => {
      const { log } = await once();
      const expected = EXPECT[name] as Expectation;
      expect(log.passes.filter((p) => p.is_output).map((p) => p.output_path)).toEqual(
        expected.outputs,
      );
      expect(log.outputs).toHaveLength(expected.outputs.length);
      expected.check?.(log);
    }, 120_000);
  });
});
