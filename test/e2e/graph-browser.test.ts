/**
 * A graph SVG made by the real CLI renders in a real browser: headless Chromium (Debian's
 * `chromium` package) loads it and takes a screenshot, and the screenshot is decoded here (a small
 * PNG reader on node:zlib) and checked to show the graph: not blank, and with the fill colours of
 * the node kinds in it. Skipped, saying so, where Chromium is not installed.
 */
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { inflateSync } from "node:zlib";
import { execa } from "execa";
import { BACK_EDGE, KIND_STYLE } from "../../src/graph/dot.js";
import { fixture, tempDir, torchlens } from "../helpers/cli.js";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM)
  console.warn(
    `graph-browser.test.ts skipped: ${CHROMIUM} is not installed (apt-get install -y chromium, or set CHROMIUM)`,
  );

interface Image {
  width: number;
  height: number;
  /** RGBA, 4 bytes per pixel, rows top to bottom. */
  rgba: Buffer;
}

/** Decodes an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium's screenshots are). */
function decodePng(png: Buffer): Image {
  if (!png.subarray(0, 8).equals(Buffer.from([137, 80, 78, 71, 13, 10, 26, 10])))
    throw new Error("not a PNG");
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  for (let at = 8; at < png.length; ) {
    const length = png.readUInt32BE(at);
    const type = png.toString("latin1", at + 4, at + 8);
    const data = png.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const [depth, colorType, , , interlace] = data.subarray(8, 13);
      if (depth !== 8 || interlace !== 0 || (colorType !== 2 && colorType !== 6))
        throw new Error(`unsupported PNG: depth ${depth}, colour type ${colorType}`);
      channels = colorType === 6 ? 4 : 3;
    } else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
    at += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const pixels = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)] as number;
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const out = pixels.subarray(y * stride, (y + 1) * stride);
    const prev = y > 0 ? pixels.subarray((y - 1) * stride, y * stride) : Buffer.alloc(stride);
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? (out[x - channels] as number) : 0;
      const b = prev[x] as number;
      const c = x >= channels ? (prev[x - channels] as number) : 0;
      const v = line[x] as number;
      let p: number;
      if (filter === 0) p = 0;
      else if (filter === 1) p = a;
      else if (filter === 2) p = b;
      else if (filter === 3) p = (a + b) >> 1;
      else if (filter === 4) {
        const q = a + b - c;
        const pa = Math.abs(q - a);
        const pb = Math.abs(q - b);
        const pc = Math.abs(q - c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else throw new Error(`bad PNG filter ${filter}`);
      out[x] = (v + p) & 0xff;
    }
  }
  const rgba = Buffer.alloc(width * height * 4, 255);
  for (let i = 0; i < width * height; i++) pixels.copy(rgba, i * 4, i * channels, i * channels + 3);
  return { width, height, rgba };
}

/** How many pixels have each colour, keyed "#rrggbb". */
function colourCounts(img: Image): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < img.width * img.height; i++) {
    const hex = `#${img.rgba.subarray(i * 4, i * 4 + 3).toString("hex")}`;
    counts.set(hex, (counts.get(hex) ?? 0) + 1);
  }
  return counts;
}

const maybe = HAVE_CHROMIUM ? test : test.skip;

describe("a graph SVG in headless Chromium", () => {
  const tmp = tempDir("torchlens-browser-");
  afterAll(() => tmp.cleanup());

  maybe(
    HAVE_CHROMIUM
      ? "the rolled graph of a loop renders: not blank, with inputs, parameterised ops and loop-back edges in their colours"
      : `skipped: ${CHROMIUM} is not installed (apt-get install -y chromium)`,
    async () => {
      const run = path.join(tmp.dir, "run");
      const ex = await torchlens([
        "extract",
        fixture("dynamic_loop.py"),
        "--input",
        fixture("dynamic_loop_input.pt"),
        "-o",
        run,
      ]);
      expect(ex.stderr).toMatch(/extracted/);
      const svg = path.join(tmp.dir, "graph.svg");
      const g = await torchlens(["graph", run, "-o", svg]);
      expect(g.exitCode).toBe(0);

      const png = path.join(tmp.dir, "shot.png");
      const shot = await execa(
        CHROMIUM,
        [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
          `--user-data-dir=${mkdtempSync(path.join(tmp.dir, "profile-"))}`,
          `--screenshot=${png}`,
          "--window-size=1200,1600",
          pathToFileURL(svg).href,
        ],
        { reject: false, timeout: 90_000 },
      );
      expect({ code: shot.exitCode, png: existsSync(png) }).toEqual({ code: 0, png: true });

      const img = decodePng(readFileSync(png));
      expect([img.width, img.height]).toEqual([1200, 1600]);
      const counts = colourCounts(img);
      const white = counts.get("#ffffff") ?? 0;
      const total = img.width * img.height;
      expect(counts.size).toBeGreaterThan(50); // text, anti-aliased edges, fills
      expect(total - white).toBeGreaterThan(total * 0.02);
      // the fills of the input, parameterised op and output nodes, and the loop-back edges
      expect(counts.get(String(KIND_STYLE.input.fillcolor)) ?? 0).toBeGreaterThan(500);
      expect(counts.get(String(KIND_STYLE.param_op.fillcolor)) ?? 0).toBeGreaterThan(1000);
      expect(counts.get(String(KIND_STYLE.output.fillcolor)) ?? 0).toBeGreaterThan(500);
      expect(counts.get(String(BACK_EDGE.color)) ?? 0).toBeGreaterThan(20);
    },
    180_000,
  );
});
