/** The .npy header parser: numpy's own spellings accepted, anything else refused (no eval). */
import { describe, expect, test } from "@jest/globals";
import { fortranToC, parseNpyHeader } from "../../src/store/npy.js";
import { LiteralError, PyDict, PyTuple, parsePyLiteral } from "../../src/store/pyLiteral.js";

describe("parseNpyHeader (the strict .npy dict parser)", () => {
  test("accepts numpy's own spellings: trailing comma, 1-tuples, (), double quotes, Python 2 longs", () => {
    expect(
      parseNpyHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }          \n"),
    ).toEqual({
      descr: "<f4",
      fortranOrder: false,
      shape: [2, 3],
    });
    expect(
      parseNpyHeader("{'descr': '<i8', 'fortran_order': True, 'shape': (7,), }").shape,
    ).toEqual([7]);
    expect(parseNpyHeader("{'descr': '|b1', 'fortran_order': False, 'shape': ()}").shape).toEqual(
      [],
    );
    expect(
      parseNpyHeader(`{"shape": (3L, 4L), "descr": "<f8", "fortran_order": False}`).shape,
    ).toEqual([3, 4]);
  });

  test.each([
    ["not a dict", "['descr', '<f4']", /not a dict/],
    [
      "a function call",
      "{'descr': __import__('os').system('echo hi'), 'fortran_order': False, 'shape': ()}",
      /unexpected "_"/,
    ],
    [
      "a missing key",
      "{'descr': '<f4', 'shape': (2,)}",
      /expected keys descr, fortran_order, shape/,
    ],
    [
      "an extra key",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
      /expected keys/,
    ],
    [
      "a list shape",
      "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}",
      /shape is not a tuple/,
    ],
    [
      "a negative dimension",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}",
      /non-negative integers/,
    ],
    [
      "a float dimension",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}",
      /expected an integer/,
    ],
    [
      "a structured descr",
      "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}",
      /structured dtypes are not supported/,
    ],
    [
      "text after the dict",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x",
      /unexpected text after the dict/,
    ],
    ["an unterminated string", "{'descr': '<f4", /unterminated string/],
    [
      "fortran_order as an int",
      "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",
      /fortran_order is not True or False/,
    ],
  ])("refuses %s", (_why, text, why) => {
    expect(() => parseNpyHeader(text)).toThrow(why);
  });
});

describe("parsePyLiteral (the literals a header may hold)", () => {
  test("strings with escapes, u-prefixed strings, None, nested lists and dicts", () => {
    expect(parsePyLiteral(String.raw`'a\'b\x41\u00e9'`)).toBe("a'bAé");
    expect(parsePyLiteral("u'x'")).toBe("x");
    expect(parsePyLiteral("None")).toBeNull();
    const v = parsePyLiteral("{'a': [1, (2,), {}], 'b': ()}");
    expect(v).toBeInstanceOf(PyDict);
    const [[, list], [, empty]] = (v as PyDict).entries as [unknown, unknown][];
    expect((list as unknown[])[0]).toBe(1);
    expect((list as unknown[])[1]).toBeInstanceOf(PyTuple);
    expect((empty as PyTuple).items).toEqual([]);
  });

  test("(x) is x, as in Python; trailing text names what was expected", () => {
    expect(parsePyLiteral("(7)")).toBe(7);
    expect(() => parsePyLiteral("1 2", "number")).toThrow(/unexpected text after the number/);
    expect(() => parsePyLiteral("[".repeat(40))).toThrow(LiteralError);
    expect(() => parsePyLiteral("[".repeat(40))).toThrow(/nested too deeply/);
  });
});

describe("fortranToC", () => {
  test("reorders a 2x3 Fortran-order array of int16 to C order", () => {
    // C order 0..5 of shape (2, 3) stored column-major: 0 3 1 4 2 5
    const f = Buffer.from(new Int16Array([0, 3, 1, 4, 2, 5]).buffer);
    const c = fortranToC(f, [2, 3], 2);
    expect([...new Int16Array(c.buffer, c.byteOffset, 6)]).toEqual([0, 1, 2, 3, 4, 5]);
  });

  test("1-d and single-element arrays are already in C order", () => {
    const b = Buffer.from([1, 2, 3]);
    expect(fortranToC(b, [3], 1)).toBe(b);
  });
});
