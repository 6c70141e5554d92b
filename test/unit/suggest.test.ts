/** Close-match suggestions: one edit distance, two notions of close (names, archive keys). */
import { describe, expect, test } from "@jest/globals";
import { closeMatches, editDistance, KEY_CLOSENESS } from "../../src/util/suggest.js";

describe("editDistance", () => {
  test("counts insertions, deletions and substitutions", () => {
    expect(editDistance("tanh", "tahn")).toBe(2);
    expect(editDistance("", "abc")).toBe(3);
    expect(editDistance("relu", "relu")).toBe(0);
    expect(editDistance("kitten", "sitting")).toBe(3);
  });

  test("stops at limit + 1 once the distance must exceed the limit", () => {
    expect(editDistance("kitten", "sitting", 2)).toBe(3);
    expect(editDistance("a", "abcdef", 2)).toBe(3);
    expect(editDistance("kitten", "sitting", 3)).toBe(3);
  });
});

describe("closeMatches for names (selectors, labels, module addresses)", () => {
  test("ranks by relative edit distance, prefixes first, case-insensitively", () => {
    expect(closeMatches("relu", ["relu_1_2", "gelu", "linear"], undefined, 2)).toEqual([
      "relu_1_2",
      "gelu",
    ]);
    expect(closeMatches("tahn", ["tanh", "a", "input_1"])).toEqual(["tanh"]);
    expect(closeMatches("TANH", ["tanh_1_4"])).toEqual(["tanh_1_4"]);
  });

  test("equally close names come alphabetically, each once; at most 5 by default", () => {
    expect(closeMatches("relu_1", ["relu_9", "relu_2", "relu_2"])).toEqual(["relu_2", "relu_9"]);
    const many = Array.from({ length: 9 }, (_, i) => `conv2d_${i}`);
    expect(closeMatches("conv2d", many)).toHaveLength(5);
  });

  test("nothing far away is suggested", () => {
    expect(closeMatches("xyzzy", ["conv2d_1_1", "relu_1_3"])).toEqual([]);
  });
});

describe("closeMatches for archive keys", () => {
  test("within a third of the key's length in edits (at least 2), in archive order on ties", () => {
    const keys = ["conv2d_1_2", "relu_1_3", "conv2d_1_1"];
    expect(closeMatches("conv2d_1_3", keys, KEY_CLOSENESS)).toEqual(["conv2d_1_2", "conv2d_1_1"]);
    expect(closeMatches("conv2d_1_3", keys, KEY_CLOSENESS, 1)).toEqual(["conv2d_1_2"]);
  });

  test("a key containing the word, or contained in it, comes after the near ones", () => {
    expect(closeMatches("relu", ["features.relu_output", "relu_1", "gelu"], KEY_CLOSENESS)).toEqual(
      ["gelu", "relu_1", "features.relu_output"],
    );
    expect(closeMatches("completely_unrelated_name", ["xyz", "q", "e"], KEY_CLOSENESS)).toEqual([
      "e",
    ]);
  });
});
