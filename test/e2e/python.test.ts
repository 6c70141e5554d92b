import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Agent } from "../../src/agent/process.js";
import { choosePython, DEFAULT_CANDIDATES } from "../../src/agent/python.js";
import { isTorchlensError } from "../../src/errors.js";
import { fixture, PYTHON, tempDir, torchlens } from "../helpers/cli.js";

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** A fake interpreter: a shell script that behaves like a Python lacking torch (exits 3 after saying so). */
function pythonWithout(name: string, missing: string): string {
  const file = path.join(tmp.dir, name);
  writeFileSync(file, `#!/bin/sh\necho "TORCHLENS_MISSING ${missing}" >&2\nexit 3\n`);
  chmodSync(file, 0o755);
  return file;
}

describe("choosePython: which interpreters are tried, in order", () => {
  test("--python wins over TORCHLENS_PYTHON and is explicit", () => {
    expect(choosePython("/opt/py", { TORCHLENS_PYTHON: "/env/py" })).toEqual({
      candidates: ["/opt/py"],
      explicit: true,
      source: "--python",
    });
  });
  test("TORCHLENS_PYTHON is used as given when there is no flag", () => {
    expect(choosePython(undefined, { TORCHLENS_PYTHON: "/env/py" })).toEqual({
      candidates: ["/env/py"],
      explicit: true,
      source: "TORCHLENS_PYTHON",
    });
  });
  test("otherwise python3, python, /usr/bin/python3 are searched", () => {
    expect(choosePython(undefined, {})).toEqual({
      candidates: DEFAULT_CANDIDATES,
      explicit: false,
      source: "search",
    });
  });
});

describe("Agent.start with real interpreters", () => {
  test("a real Python without its site-packages is found lacking torch, numpy and msgpack by the agent itself", async () => {
    const bare = path.join(tmp.dir, "bare-python");
    writeFileSync(bare, `#!/bin/sh\nexec ${PYTHON} -S "$@"\n`);
    chmodSync(bare, 0o755);
    const err = await Agent.start({
      python: { candidates: [bare], explicit: true, source: "--python" },
    }).catch((e) => e);
    expect(err.message).toMatch(/lacks torch, numpy, msgpack/);
  });

  test("a search skips interpreters that lack torch and uses the first that has everything", async () => {
    const agent = await Agent.start({
      python: {
        candidates: [pythonWithout("nopy1", "torch"), "/no/such/python", PYTHON],
        explicit: false,
        source: "search",
      },
    });
    expect(agent.hello.torch).toMatch(/^\d/);
    agent.send({ type: "shutdown" });
    await agent.close();
  });

  test("when no candidate works, the error lists each one tried and what it lacked", async () => {
    const err = await Agent.start({
      python: {
        candidates: [pythonWithout("nopy2", "torch,msgpack"), "/no/such/python"],
        explicit: false,
        source: "search",
      },
    }).catch((e) => e);
    expect(isTorchlensError(err)).toBe(true);
    expect(err.exitCode).toBe(2);
    expect(err.message).toMatch(/no Python with torch/);
    expect(err.details.join("\n")).toMatch(/nopy2: lacks torch, msgpack/);
    expect(err.details.join("\n")).toMatch(/\/no\/such\/python: not found/);
    expect(err.hint).toMatch(/apt-get install python3-torch/);
  });

  test("an explicitly named Python that lacks torch is the error: no silent fallback", async () => {
    const bad = pythonWithout("nopy3", "torch");
    const err = await Agent.start({
      python: { candidates: [bad], explicit: true, source: "--python" },
    }).catch((e) => e);
    expect(err.message).toMatch(/--python/);
    expect(err.message).toMatch(/lacks torch/);
  });
});

test("the CLI with TORCHLENS_PYTHON pointing at a Python without torch exits 2 and says which variable", async () => {
  const bad = pythonWithout("nopy4", "torch");
  const res = await torchlens(["extract", fixture("cnn.py"), "-o", path.join(tmp.dir, "never")], {
    env: { TORCHLENS_PYTHON: bad },
  });
  expect(res.exitCode).toBe(2);
  expect(res.stderr).toMatch(/TORCHLENS_PYTHON/);
  expect(res.stderr).toMatch(/fix:/);
});

test("the CLI with --python naming a missing file exits 2 saying it was not found", async () => {
  const res = await torchlens([
    "extract",
    fixture("cnn.py"),
    "--python",
    "/no/such/python3",
    "-o",
    path.join(tmp.dir, "never"),
  ]);
  expect(res.exitCode).toBe(2);
  expect(res.stderr).toMatch(/\/no\/such\/python3.*not found/);
});

describe("the agent started before the CLI's modules load", () => {
  /** A Python that notes its pid, then runs the real one (so it is a real agent). */
  function pythonNotingPid(pidFile: string): string {
    const file = path.join(tmp.dir, "noting-python");
    writeFileSync(file, `#!/bin/sh\necho $$ >> "${pidFile}"\nexec "${PYTHON}" "$@"\n`);
    chmodSync(file, 0o755);
    return file;
  }

  /** Running, not a zombie (a killed child whose new parent, in a container, may never reap it). */
  const alive = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0] !== "Z";
    } catch {
      return false;
    }
  };

  test("a command that fails before using it exits at once and leaves no agent running", async () => {
    const pidFile = path.join(tmp.dir, "early.pid");
    const res = await torchlens(["extract", "no/such/model.py", "-o", path.join(tmp.dir, "nope")], {
      env: { TORCHLENS_PYTHON: pythonNotingPid(pidFile) },
    });
    expect(res.exitCode).toBe(2);
    const pid = Number(readFileSync(pidFile, "utf8"));
    expect(pid).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(alive(pid)).toBe(false);
  });

  /** Live processes whose environment holds `marker` (a killed one may linger as a zombie). */
  const liveWith = (marker: string): number[] =>
    readdirSync("/proc")
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          return readFileSync(`/proc/${d}/environ`, "latin1").includes(marker) && alive(Number(d));
        } catch {
          return false;
        }
      })
      .map(Number);

  test("a search starts the later candidates beside the first and wakes the next one's standby when the first lacks torch; the unneeded standby exits", async () => {
    // PATH holds fakes for the searched names: python3 lacks torch (after a pause, so that the
    // order of events shows whether python started beside it); python is a real Python that marks
    // its environment. /usr/bin/python3, the third candidate, starts in standby beside them.
    const bin = path.join(tmp.dir, "search-bin");
    mkdirSync(bin, { recursive: true });
    const events = path.join(tmp.dir, "search-events.txt");
    writeFileSync(
      path.join(bin, "python3"),
      `#!/bin/sh\nsleep 0.5\necho python3-gave-up >> "${events}"\necho "TORCHLENS_MISSING torch" >&2\nexit 3\n`,
    );
    writeFileSync(
      path.join(bin, "python"),
      `#!/bin/sh\necho python-started >> "${events}"\nTORCHLENS_TEST_CANDIDATE=python exec "${PYTHON}" "$@"\n`,
    );
    chmodSync(path.join(bin, "python3"), 0o755);
    chmodSync(path.join(bin, "python"), 0o755);
    const seen = path.join(tmp.dir, "search-seen.txt");
    const model = path.join(tmp.dir, "search_model.py");
    writeFileSync(
      model,
      [
        "import os, torch",
        "def build_model():",
        `    open(${JSON.stringify(seen)}, "a").write(os.environ.get("TORCHLENS_TEST_CANDIDATE", "other") + "\\n")`,
        "    return torch.nn.Linear(3, 2)",
        "def example_input():",
        "    return torch.ones(1, 3)",
        "",
      ].join("\n"),
    );
    const runId = `${process.pid}-${Date.now()}`;
    const res = await torchlens(["extract", model, "-o", path.join(tmp.dir, "search_run")], {
      env: {
        TORCHLENS_PYTHON: "",
        PATH: [bin, path.dirname(process.execPath), "/bin", "/usr/bin"].join(path.delimiter),
        TORCHLENS_TEST_RUN: runId,
      },
    });
    expect(res.exitCode).toBe(0);
    // python was started before python3 gave up (beside it, not after it) ...
    expect(readFileSync(events, "utf8")).toBe("python-started\npython3-gave-up\n");
    // ... and the model ran once, in it: its standby was woken, not a fresh start
    expect(readFileSync(seen, "utf8")).toBe("python\n");
    await new Promise((r) => setTimeout(r, 300));
    expect(liveWith(`TORCHLENS_TEST_RUN=${runId}`)).toEqual([]);
  }, 60_000);

  test("extract adopts it: one agent process serves the whole run", async () => {
    const pidFile = path.join(tmp.dir, "adopted.pid");
    const run = path.join(tmp.dir, "adopted_run");
    const res = await torchlens(
      ["extract", fixture("cnn.py"), "--input", fixture("cnn_input.pt"), "-o", run, "--json"],
      { env: { TORCHLENS_PYTHON: pythonNotingPid(pidFile) } },
    );
    expect(res.exitCode).toBe(0);
    // started once, early, and used: not a second interpreter for the same Python
    expect(readFileSync(pidFile, "utf8").trim().split("\n")).toHaveLength(1);
  }, 60_000);
});
