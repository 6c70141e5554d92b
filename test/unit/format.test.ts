/** How values read in output (ui/format.ts) and the words of messages (util/text.ts). */
import { describe, expect, test } from "@jest/globals";
import {
  formatBytes,
  formatCount,
  formatMs,
  formatShape,
  formatStat,
  moduleName,
} from "../../src/ui/format.js";
import { plural } from "../../src/util/text.js";

describe("formatters", () => {
  test("formatShape joins dimensions with x and shows a 0-d tensor as ()", () => {
    expect(formatShape([1, 3, 32, 32])).toBe("1x3x32x32");
    expect(formatShape([])).toBe("()");
  });

  test("formatStat: integers whole, six significant digits, exponents for tiny values, - for none", () => {
    expect(formatStat(3)).toBe("3");
    expect(formatStat(0.123456789)).toBe("0.123457");
    expect(formatStat(-1234.56789)).toBe("-1234.57");
    expect(formatStat(1.5e-7)).toBe("1.5e-7");
    expect(formatStat(null)).toBe("-");
  });

  // bytes in decimal units, counts in k/M/G; one decimal below 100
  test.each([
    [formatBytes, 32, "32 B"],
    [formatBytes, 32768, "32.8 KB"],
    [formatBytes, 131200, "131 KB"],
    [formatBytes, 2.5e12, "2.5 TB"],
    [formatCount, 999, "999"],
    [formatCount, 1234, "1.2k"],
    [formatCount, 25_557_032, "25.6M"],
    [formatCount, 123_456_789, "123M"],
  ] as const)("%p(%d) is %j", (f, n, text) => {
    expect(f(n)).toBe(text);
  });

  test("formatMs: durations in ms or s, op times to the microsecond with or without the unit", () => {
    expect(formatMs(849.6)).toBe("850 ms");
    expect(formatMs(1234)).toBe("1.23 s");
    expect(formatMs(0.04249, "op")).toBe("0.042 ms");
    expect(formatMs(0.04249, "cell")).toBe("0.042");
  });

  test("moduleName: the model itself reads (model)", () => {
    expect(moduleName("")).toBe("(model)");
    expect(moduleName("features.0")).toBe("features.0");
  });
});

describe("plural", () => {
  test("singular only for 1; many defaults to one + s", () => {
    expect(plural(1, "pass", "passes")).toBe("1 pass");
    expect(plural(3, "pass", "passes")).toBe("3 passes");
    expect(plural(0, "array")).toBe("0 arrays");
    expect(plural(1, "array")).toBe("1 array");
  });
});
