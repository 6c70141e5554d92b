/**
 * Which Python runs the agent. `--python PATH`, else `TORCHLENS_PYTHON`, are used as given (an
 * error if they cannot run it, never a silent fallback); otherwise the first of `python3`,
 * `python`, `/usr/bin/python3` that has torch, numpy and msgpack. The agent itself tells whether
 * its Python has them (process.ts), so finding Python costs no extra interpreter start.
 */

export interface PythonChoice {
  /** Candidates in order; `explicit` ones are never skipped over. */
  candidates: string[];
  explicit: boolean;
  /** Where the explicit choice came from, for messages. */
  source: "--python" | "TORCHLENS_PYTHON" | "search";
}

export const DEFAULT_CANDIDATES = ["python3", "python", "/usr/bin/python3"];

export function choosePython(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): PythonChoice {
  if (flag) return { candidates: [flag], explicit: true, source: "--python" };
  const fromEnv = env.TORCHLENS_PYTHON;
  if (fromEnv) return { candidates: [fromEnv], explicit: true, source: "TORCHLENS_PYTHON" };
  return { candidates: [...DEFAULT_CANDIDATES], explicit: false, source: "search" };
}

/** What one candidate lacked, for the "no Python found" message. */
export interface Attempt {
  python: string;
  problem: string;
}

export function describeAttempts(attempts: Attempt[]): string[] {
  return attempts.map((a) => `${a.python}: ${a.problem}`);
}

export const INSTALL_HINT =
  "install torch, numpy and msgpack for a Python 3 (on Debian/Ubuntu: apt-get install python3-torch " +
  "python3-numpy python3-msgpack, or run `npm run demo` which sets this up), or point --python / " +
  "TORCHLENS_PYTHON at a Python that has them";
