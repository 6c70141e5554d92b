/**
 * Real architectures nobody here wrote, through the real CLI: extract, then validate must pass.
 * A few zoo models (zoo/models.py, the models `npm run zoo` runs) and the tricky fixtures
 * (fixtures/tricky_*.py), each of which once broke capture or validation.
 */
import { readdirSync } from "node:fs";
import path from "node:path";
import { fixture, python, ROOT, tempDir } from "../helpers/cli.js";
import {
  expectConnected,
  expectValid,
  extractAndValidate as extractAndValidateTo,
  type Outcome,
} from "../helpers/runs.js";

const ZOO = path.join(ROOT, "zoo/models.py");
const tmp = tempDir("torchlens-zoo-test-");
afterAll(() => tmp.cleanup());

const hasModule = async (name: string) => (await python(["-c", `import ${name}`])).exitCode === 0;
const HAS_TORCHVISION = await hasModule("torchvision");
const HAS_TORCHAUDIO = await hasModule("torchaudio");

/** extract then validate into tmp/NAME. */
const extractAndValidate = (
  name: string,
  model: string,
  extra: string[],
  env: Record<string, string> = {},
): Promise<Outcome> => extractAndValidateTo(path.join(tmp.dir, name), model, extra, env);

// -- zoo models ----------------------------------------------------------------------------------

const zooRuns = new Map<string, Promise<Outcome>>();
/** A zoo model's outcome, run once however many tests look at it. */
function zoo(name: string): Promise<Outcome> {
  let outcome = zooRuns.get(name);
  if (!outcome) {
    outcome = extractAndValidate(name, ZOO, [], { TORCHLENS_ZOO_MODEL: name });
    zooRuns.set(name, outcome);
  }
  return outcome;
}

const describeVision = HAS_TORCHVISION ? describe : describe.skip;
const describeAudio = HAS_TORCHAUDIO ? describe : describe.skip;

describeVision("torchvision models extract and validate", () => {
  test("a CNN: resnet18 at 1x3x64x64", async () => {
    const outcome = await zoo("resnet18");
    expectValid(outcome);
    expectConnected(outcome);
    expect(outcome.log.num_passes).toBeGreaterThan(100);
  }, 120_000);

  // The classifier head's weight is zeros (torchvision's init): the "zero-parameters" exemption.
  test("a vision transformer: vit_b_16 (image_size 64)", async () => {
    const outcome = await zoo("vit_b_16");
    expectValid(outcome);
    expectConnected(outcome);
  }, 120_000);

  test("a detection model: fasterrcnn_mobilenet_v3_large_320_fpn on one 3x128x128 image", async () => {
    const outcome = await zoo("fasterrcnn_mobilenet_v3_large_320_fpn");
    expectValid(outcome);
    const funcs = new Set(outcome.log.passes.map((p) => p.func));
    for (const f of ["nms", "roi_align", "view_write"]) expect(funcs).toContain(f);
  }, 180_000);

  // SSD's postprocessing indexes a tensor of one class label (all values equal) with indices
  // from torch.where: the `may-ignore` exemption for tensor indexing covers it.
  test("a detection model: ssdlite320_mobilenet_v3_large on one 3x128x128 image", async () => {
    expectValid(await zoo("ssdlite320_mobilenet_v3_large"));
  }, 180_000);

  // torchvision::nms runs through torch.ops and must be an op, not a `constant`. (The model's
  // anchor tensors are true constants, made in __init__, so this looks for the op instead of
  // asking for no constants.)
  test("a detection model's graph is whole: ssdlite320's NMS is an op and every output is reached", async () => {
    const { log } = await zoo("ssdlite320_mobilenet_v3_large");
    expect(log.passes.some((p) => p.func === "nms")).toBe(true);
    const unreached = log.passes.filter((p) => p.is_output && p.distance_from_input === null);
    expect(unreached.map((p) => p.label)).toEqual([]);
  }, 180_000);
});

describeAudio("torchaudio models extract and validate", () => {
  test("an audio model: wav2vec2_base on a 1x8000 waveform", async () => {
    expectValid(await zoo("wav2vec2_base"));
  }, 180_000);

  // The positional convolution's weight comes from weight_norm's `torch._weight_norm`, a private
  // function that torch.nn.utils.weight_norm imported by name: it must be an op, with edges to
  // weight_g / weight_v, not a `constant`.
  test("an audio model's graph is whole: wav2vec2_base's weight norm is an op", async () => {
    expectConnected(await zoo("wav2vec2_base"));
  }, 180_000);
});

// -- tricky fixtures -----------------------------------------------------------------------------

/** Every tricky fixture: each one is a pattern that once broke capture or validation. */
const TRICKY = readdirSync(path.join(ROOT, "fixtures"))
  .filter((f) => /^tricky_.*\.py$/.test(f))
  .map((f) => f.slice(0, -3))
  .sort();

test("the tricky fixtures are there to check", () => {
  expect(TRICKY).toEqual(
    expect.arrayContaining(["tricky_packed_lstm", "tricky_scripted", "tricky_tensor_from_tensors"]),
  );
});

describe.each(TRICKY)("%s", (name) => {
  let outcome: Promise<Outcome> | null = null;
  const once = () => {
    outcome ??= extractAndValidate(name, fixture(`${name}.py`), [
      "--input",
      fixture(`${name}_input.pt`),
    ]);
    return outcome;
  };
  test("extracts and validates", async () => expectValid(await once()));
  test("records a whole graph: no constants, every output reached from an input", async () =>
    expectConnected(await once()));
});
