/**
 * A strict parser of the Python literals numpy writes into a .npy header, such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * A small recursive-descent parser, never `eval`: strings, integers, True/False/None, tuples,
 * lists and dicts, nothing else.
 */

/** Text that is not the Python literal expected; `message` says what and where. */
export class LiteralError extends Error {}

export type PyValue = string | number | boolean | null | PyTuple | PyValue[] | PyDict;

export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

export class PyDict {
  constructor(readonly entries: [PyValue, PyValue][]) {}
}

/**
 * The one literal `text` holds (surrounding white space allowed); throws {@link LiteralError}
 * on anything else. `what` names the expected literal in the error for trailing text.
 */
export function parsePyLiteral(text: string, what = "literal"): PyValue {
  const p = new LiteralParser(text);
  const value = p.value();
  p.end(what);
  return value;
}

class LiteralParser {
  private i = 0;
  constructor(private readonly s: string) {}

  end(what: string): void {
    this.ws();
    if (this.i !== this.s.length) this.fail(`unexpected text after the ${what}`);
  }

  value(depth = 0): PyValue {
    if (depth > 32) this.fail("nested too deeply");
    this.ws();
    const c = this.s[this.i];
    if (c === "{") return this.dict(depth);
    if (c === "(") return this.tuple(depth);
    if (c === "[") return this.list(depth);
    if (c === "'" || c === '"') return this.string();
    if (c === "u" && (this.s[this.i + 1] === "'" || this.s[this.i + 1] === '"')) {
      this.i++;
      return this.string();
    }
    if (c !== undefined && /[-+0-9]/.test(c)) return this.int();
    for (const [word, v] of [
      ["True", true],
      ["False", false],
      ["None", null],
    ] as const) {
      if (this.s.startsWith(word, this.i) && !/\w/.test(this.s[this.i + word.length] ?? "")) {
        this.i += word.length;
        return v;
      }
    }
    return this.fail(c === undefined ? "unexpected end" : `unexpected ${JSON.stringify(c)}`);
  }

  private dict(depth: number): PyDict {
    this.i++;
    const entries: [PyValue, PyValue][] = [];
    for (;;) {
      this.ws();
      if (this.eat("}")) return new PyDict(entries);
      const k = this.value(depth + 1);
      this.ws();
      if (!this.eat(":")) this.fail("expected ':'");
      entries.push([k, this.value(depth + 1)]);
      this.ws();
      if (this.eat("}")) return new PyDict(entries);
      if (!this.eat(",")) this.fail("expected ',' or '}'");
    }
  }

  private list(depth: number): PyValue[] {
    this.i++;
    const items: PyValue[] = [];
    for (;;) {
      this.ws();
      if (this.eat("]")) return items;
      items.push(this.value(depth + 1));
      this.ws();
      if (this.eat("]")) return items;
      if (!this.eat(",")) this.fail("expected ',' or ']'");
    }
  }

  /** `()`, `(x,)`, `(x, y)`, `(x, y,)`; `(x)` is just x, as in Python. */
  private tuple(depth: number): PyValue {
    this.i++;
    const items: PyValue[] = [];
    let comma = false;
    for (;;) {
      this.ws();
      if (this.eat(")")) break;
      items.push(this.value(depth + 1));
      this.ws();
      if (this.eat(")")) break;
      if (!this.eat(",")) this.fail("expected ',' or ')'");
      comma = true;
    }
    if (items.length === 1 && !comma) return items[0] as PyValue;
    return new PyTuple(items);
  }

  private string(): string {
    const q = this.s[this.i++];
    let out = "";
    for (;;) {
      const c = this.s[this.i++];
      if (c === undefined || c === "\n") this.fail("unterminated string");
      if (c === q) return out;
      if (c !== "\\") {
        out += c;
        continue;
      }
      const e = this.s[this.i++];
      const simple: Record<string, string> = {
        "\\": "\\",
        "'": "'",
        '"': '"',
        n: "\n",
        t: "\t",
        r: "\r",
        "0": "\0",
      };
      if (e !== undefined && e in simple) out += simple[e];
      else if (e === "x" || e === "u") {
        const n = e === "x" ? 2 : 4;
        const hex = this.s.slice(this.i, this.i + n);
        if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) this.fail("bad escape in string");
        out += String.fromCharCode(Number.parseInt(hex, 16));
        this.i += n;
      } else this.fail("bad escape in string");
    }
  }

  /** A decimal integer; Python 2's `L` suffix (old numpy headers) is accepted. */
  private int(): number {
    const m = /^[-+]?[0-9]+L?/.exec(this.s.slice(this.i, this.i + 40));
    if (!m || /[.eE_]/.test(this.s[this.i + m[0].length] ?? "")) this.fail("expected an integer");
    const digits = (m as RegExpExecArray)[0].replace(/L$/, "");
    this.i += (m as RegExpExecArray)[0].length;
    const v = Number(digits);
    if (!Number.isSafeInteger(v)) this.fail(`integer ${digits} is out of range`);
    return v;
  }

  private ws(): void {
    while (this.i < this.s.length && /[ \t\n\r]/.test(this.s[this.i] as string)) this.i++;
  }

  private eat(c: string): boolean {
    if (this.s[this.i] !== c) return false;
    this.i++;
    return true;
  }

  private fail(why: string): never {
    throw new LiteralError(`${why} at character ${this.i}`);
  }
}
