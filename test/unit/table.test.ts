/** The table formatter behind ls, show and profile: alignment, truncation, footers. */
import { displayWidth, renderTable, truncate } from "../../src/ui/table.js";

describe("renderTable", () => {
  const columns = [
    { header: "label" },
    { header: "n" },
    { header: "size", align: "right" as const },
  ];
  const rows = [
    ["conv2d_1_1", 224, "32.8 KB"],
    ["relu", 0, "32 B"],
  ];

  test("pads text columns to their widest cell and puts two spaces between columns", () => {
    const lines = renderTable(columns, rows).split("\n");
    expect(lines[0]).toBe("label         n     size");
    expect(lines[1]).toBe("conv2d_1_1  224  32.8 KB");
    expect(lines[2]).toBe("relu          0     32 B");
  });

  test("right-aligns columns whose cells are all numbers, and those marked right, headers included", () => {
    const lines = renderTable(columns, rows).split("\n");
    // "n" and "size" end at the same position in every line
    const ends = lines.map((l) => l.length);
    expect(new Set(ends).size).toBe(1);
    expect(lines[0]?.endsWith("size")).toBe(true);
  });

  test("leaves a column left-aligned when any of its cells is text", () => {
    const out = renderTable([{ header: "x" }], [[1], ["abc"]]);
    expect(out.split("\n")).toEqual(["x", "1", "abc"]);
  });

  test("shows null and undefined as empty cells and leaves no trailing spaces", () => {
    const out = renderTable(
      [{ header: "a" }, { header: "module" }],
      [
        ["x", null],
        ["y", undefined],
      ],
    );
    for (const line of out.split("\n")) expect(line).toBe(line.trimEnd());
    expect(out.split("\n").slice(1)).toEqual(["x", "y"]);
  });

  test("without a width nothing is cut, however long (pipes keep whole labels)", () => {
    const long = "layers.0.self_attn.out_proj.something_very_long_indeed";
    expect(renderTable([{ header: "module" }], [[long]])).toContain(long);
  });

  test("with a width, the widest text column is shortened with … until the table fits", () => {
    const wide = [
      ["a", "layers.0.self_attn.out_proj", "MultiheadAttention", 12],
      ["b", "x", "Linear", 3],
    ];
    const cols = [
      { header: "l", keep: true },
      { header: "module" },
      { header: "class" },
      { header: "n" },
    ];
    const out = renderTable(cols, wide, { width: 40 });
    for (const line of out.split("\n")) expect(displayWidth(line)).toBeLessThanOrEqual(40);
    expect(out).toContain("…");
    // the kept column and the numbers are whole
    expect(out.split("\n")[1]?.startsWith("a  ")).toBe(true);
    expect(out.split("\n")[1]?.endsWith("12")).toBe(true);
  });

  test("a column marked keep is never shortened, even when the table cannot fit", () => {
    const label = "a_very_long_label_that_users_copy_1_2:3";
    const out = renderTable([{ header: "label", keep: true }, { header: "f" }], [[label, "relu"]], {
      width: 10,
    });
    expect(out).toContain(label);
  });

  test("a footer goes under a rule of dashes as wide as each column", () => {
    const out = renderTable(
      [{ header: "name" }, { header: "ms", align: "right" }],
      [["conv", "1.000"]],
      { footer: ["total", "1.000"] },
    );
    expect(out.split("\n")).toEqual([
      "name      ms",
      "conv   1.000",
      "-----  -----",
      "total  1.000",
    ]);
  });
});

describe("cell helpers", () => {
  test("truncate cuts to the width, ending in …, and leaves short text alone", () => {
    expect(truncate("abcdefgh", 5)).toBe("abcd…");
    expect(displayWidth(truncate("abcdefgh", 5))).toBe(5);
    expect(truncate("abc", 5)).toBe("abc");
    expect(truncate("abc", 0)).toBe("");
  });
});
