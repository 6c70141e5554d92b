/** The torch of the Python the tests use (PYTHON in ./cli.ts), asked once per test file. */
import { python } from "./cli.js";

const probe = await python(["-c", "import torch; print(torch.__version__)"]);
/** torch.__version__ ("1.13.0a0", "2.13.0+cpu"), or "" where the Python has no torch. */
export const TORCH_VERSION = probe.exitCode === 0 ? probe.stdout.trim() : "";
/** torch 2 or newer. */
export const HAS_TORCH2 = Number.parseInt(TORCH_VERSION, 10) >= 2;

/** Whether a fixture (a name in fixtures/, without .py) runs under this torch: fixtures/torch2_*.py
 * use what only torch 2 has (test/torch2.test.ts), so the tests that take every fixture leave them
 * out under an older torch. */
export function fixtureRunsHere(name: string): boolean {
  return HAS_TORCH2 || !name.startsWith("torch2_");
}
