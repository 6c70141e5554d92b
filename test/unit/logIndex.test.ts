/** The log index (src/log/logIndex.ts) on logs built from recorded agent streams. */
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, test } from "@jest/globals";
import { buildLog } from "../../src/log/build.js";
import { formatCall, LogIndex, paramAddress, parseCall } from "../../src/log/logIndex.js";
import type { RawRun, RunLog } from "../../src/log/types.js";

const RAW = new URL("../fixtures/raw/", import.meta.url);
const NAMES = readdirSync(RAW)
  .filter((f) => f.endsWith(".json"))
  .map((f) => f.slice(0, -5));

function recorded(name: string): RunLog {
  const raw: RawRun = JSON.parse(readFileSync(new URL(`${name}.json`, RAW), "utf8"));
  return buildLog(raw, () => true);
}
const logs = new Map(NAMES.map((n) => [n, recorded(n)]));
const logOf = (name: string) => logs.get(name) as RunLog;

describe("module calls: one spelling, one parse", () => {
  test("formatCall and parseCall are inverses; the address may itself hold a colon", () => {
    expect(formatCall({ address: "encoder.layers.0", call: 2 })).toBe("encoder.layers.0:2");
    expect(parseCall("encoder.layers.0:2")).toEqual({ address: "encoder.layers.0", call: 2 });
    expect(parseCall("dict.a:b:3")).toEqual({ address: "dict.a:b", call: 3 });
    expect(parseCall(":1")).toEqual({ address: "", call: 1 });
  });

  test.each(["features", "features:", "features:x", "a:1x"])("%j is not a call label", (s) => {
    expect(parseCall(s)).toBeNull();
  });

  test.each(NAMES)("%s: every call label in the log parses back to itself", (name) => {
    const log = logOf(name);
    for (const p of log.passes)
      for (const label of p.modules) {
        const ref = parseCall(label);
        expect(ref).not.toBeNull();
        expect(formatCall(ref as NonNullable<typeof ref>)).toBe(label);
      }
    for (const m of log.modules)
      for (const c of m.calls)
        expect(parseCall(c.label)).toEqual({ address: m.address, call: c.call });
  });
});

describe("passes and layers", () => {
  const index = new LogIndex(logOf("two_loops"));

  test("a pass and a layer by label; unknown labels give undefined", () => {
    expect(index.pass("relu_1_2:2")?.pass).toBe(2);
    expect(index.layer("relu_1_2")?.num_passes).toBe(3);
    expect(index.pass("relu_1_2")).toBeUndefined();
    expect(index.layer("nosuch")).toBeUndefined();
  });

  test.each(NAMES)("%s: passesOf gives each layer's passes in execution order", (name) => {
    const log = logOf(name);
    const ix = new LogIndex(log);
    for (const l of log.layers) {
      const passes = ix.passesOf(l);
      expect(passes.map((p) => p.label)).toEqual(l.passes);
      expect(passes.every((p) => p.layer === l.label)).toBe(true);
      expect(passes.map((p) => p.pass)).toEqual(passes.map((_, i) => i + 1));
    }
  });

  test.each(NAMES)(
    "%s: childArgs names the argument positions a pass takes in each child",
    (name) => {
      const log = logOf(name);
      const ix = new LogIndex(log);
      for (const p of log.passes) {
        const want = p.children.map((c) =>
          log.edges
            .filter(([tail, head]) => tail === p.label && head === c)
            .map(([, , arg]) => arg)
            .join(","),
        );
        expect(ix.childArgs(p)).toEqual(want);
      }
    },
  );
});

describe("the module tree", () => {
  test("cnn: depth first from the model, with depth, parent and children", () => {
    const ix = new LogIndex(logOf("cnn"));
    const tree = ix.moduleTree();
    expect(tree.slice(0, 4).map((n) => [n.entry.address, n.depth])).toEqual([
      ["", 0],
      ["features", 1],
      ["features.0", 2],
      ["features.1", 2],
    ]);
    const features = ix.node("features");
    expect(features?.parent?.entry.address).toBe("");
    expect(features?.children.map((c) => c.entry.address)).toEqual(features?.entry.children);
    expect(ix.module("classifier.2")?.class).toBe("Linear");
    expect(ix.node("nosuch")).toBeUndefined();
  });

  test.each(NAMES)("%s: every module once; parents and children agree with the log", (name) => {
    const log = logOf(name);
    const tree = new LogIndex(log).moduleTree();
    expect(tree.map((n) => n.entry.address).sort()).toEqual(
      log.modules.map((m) => m.address).sort(),
    );
    for (const n of tree) {
      expect(n.parent?.entry.address ?? null).toBe(n.entry.parent);
      expect(n.depth).toBe(n.parent ? n.parent.depth + 1 : 0);
      for (const c of n.children) expect(c.parent).toBe(n);
    }
  });

  test.each(NAMES)(
    "%s: own parameters match the log; nested ones are own plus everything below",
    (name) => {
      const log = logOf(name);
      const ix = new LogIndex(log);
      for (const n of ix.moduleTree()) {
        const m = n.entry;
        expect(n.own.num_params).toBe(m.num_params);
        // the same total counted another way: every parameter whose address lies under the module
        const under = log.modules.filter(
          (x) =>
            m.address === "" || x.address === m.address || x.address.startsWith(`${m.address}.`),
        );
        expect(n.nested.num_params).toBe(under.reduce((a, x) => a + x.num_params, 0));
        expect(n.nested.param_bytes).toBe(4 * n.nested.num_params); // the fixtures are float32
      }
    },
  );

  test("the model's nested parameters are all of them (cnn shares none)", () => {
    const log = logOf("cnn");
    const ix = new LogIndex(log);
    expect(ix.node("")?.nested.num_params).toBe(log.model.num_params);
    expect(ix.paramTotals(ix.params.keys()).num_params).toBe(log.model.num_params);
  });
});

describe("parameters by address", () => {
  const log = logOf("cnn");
  const ix = new LogIndex(log);

  test("a parameter's address is its module's address and its name", () => {
    expect(paramAddress("features.0", "weight")).toBe("features.0.weight");
    expect(paramAddress("", "scale")).toBe("scale");
    expect(ix.params.get("features.0.weight")?.shape).toEqual([8, 3, 3, 3]);
  });

  test("paramTotals counts each address once and skips unknown ones", () => {
    const w = ix.params.get("features.0.weight")?.numel as number;
    expect(ix.paramTotals(["features.0.weight", "features.0.weight", "nosuch"])).toEqual({
      num_params: w,
      param_bytes: 4 * w,
    });
  });

  test("each pass's num_params equals the totals of the parameters it used", () => {
    for (const p of log.passes) expect(ix.paramTotals(p.params).num_params).toBe(p.num_params);
  });
});
