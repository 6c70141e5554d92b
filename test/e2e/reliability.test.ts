/** Bad input, faults and untrusted files, through the real CLI and agent: clear errors, no hangs, nothing lost. */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { BIN, fixture, PYTHON, python, ROOT, tempDir, torchlens } from "../helpers/cli.js";

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** Write a model file into the temp dir. */
function model(name: string, body: string): string {
  const file = path.join(tmp.dir, `${name}.py`);
  writeFileSync(file, `import torch\nfrom torch import nn\n${body}\n`);
  return file;
}
const leftovers = () => readdirSync(tmp.dir).filter((n) => n.includes(".partial-"));

describe("bad input: a clear message naming the problem and the fix, a non-zero exit, no traceback dump", () => {
  test("a syntax error in the model file names the file and line (exit 2)", async () => {
    const file = model("syntax", "def build_model(:\n    return None");
    const res = await torchlens(["extract", file, "-o", path.join(tmp.dir, "r1")]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/syntax\.py, line 3/);
    expect(res.stderr).toMatch(/fix:/);
    expect(res.stderr).not.toMatch(/Traceback \(most recent call last\)/);
  });

  test("a file with no model lists what it does define (exit 2)", async () => {
    const file = model(
      "nomodel",
      "class Net(nn.Module):\n    def forward(self, x):\n        return x\n\ndef helper():\n    pass",
    );
    const res = await torchlens(["extract", file, "-o", path.join(tmp.dir, "r2")]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/no model found/);
    expect(res.stderr).toMatch(/Net \(an nn\.Module class\)/);
    expect(res.stderr).toMatch(/helper\(\)/);
    expect(res.stderr).toMatch(/--model NAME/);
  });

  test("a constructor that raises shows the user's own frame", async () => {
    const file = model(
      "ctor",
      "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        raise ValueError('bad width')\n\ndef build_model():\n    return Net()",
    );
    const res = await torchlens(["extract", file, "-o", path.join(tmp.dir, "r3")]);
    expect(res.exitCode).not.toBe(0);
    expect(res.stderr).toMatch(/ValueError: bad width/);
    expect(res.stderr).toMatch(/ctor\.py:6 in __init__/);
    expect(res.stderr).not.toMatch(/torchlens_agent/);
  });

  test("a shape mismatch inside linear shows the user's line, not torch's", async () => {
    const file = model(
      "shape",
      "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(5, 2)\n    def forward(self, x):\n        return self.fc(x)\n\ndef build_model():\n    return Net()",
    );
    const res = await torchlens([
      "extract",
      file,
      "--input-shape",
      "1,3",
      "-o",
      path.join(tmp.dir, "r4"),
    ]);
    expect(res.exitCode).toBe(1);
    expect(res.stderr).toMatch(/forward pass raised: RuntimeError/);
    expect(res.stderr).toMatch(/shape\.py:8 in forward: return self\.fc\(x\)/);
    expect(res.stderr).not.toMatch(/site-packages|dist-packages/);
  });

  test("an input file that is not a tensor file says so, naming the file (exit 2)", async () => {
    const bad = path.join(tmp.dir, "notes.pt");
    writeFileSync(bad, "just some text\n");
    const res = await torchlens([
      "extract",
      fixture("cnn.py"),
      "--input",
      bad,
      "-o",
      path.join(tmp.dir, "r5"),
    ]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/notes\.pt is neither a \.npy file nor a torch\.save file/);
  });

  test("an input that does not match forward's signature gets a hint about the input forms", async () => {
    const pair = path.join(tmp.dir, "pair.pt");
    await python([
      "-c",
      `import torch; torch.save((torch.zeros(1,3,32,32), torch.zeros(1)), ${JSON.stringify(pair)})`,
    ]);
    const res = await torchlens([
      "extract",
      fixture("cnn.py"),
      "--input",
      pair,
      "-o",
      path.join(tmp.dir, "r6"),
    ]);
    expect(res.exitCode).toBe(1);
    expect(res.stderr).toMatch(/forward\(\)/);
    expect(res.stderr).toMatch(/fix: the input does not match the model's forward\(\) signature/);
  });

  test("a .pt holding arbitrary pickled objects is refused unless --allow-pickle", async () => {
    const pickled = path.join(tmp.dir, "pickled.pt");
    await python([
      "-c",
      // An instance of the saving script's own class: no torch's safe loader takes it (torch 2's
      // allows some standard classes, collections.Counter among them, which torch 1.13 refused).
      `import torch\nclass Box:\n    pass\ntorch.save({"args": [torch.zeros(1,3,32,32)], "kwargs": {}, "junk": Box()}, ${JSON.stringify(pickled)})`,
    ]);
    const res = await torchlens([
      "extract",
      fixture("cnn.py"),
      "--input",
      pickled,
      "-o",
      path.join(tmp.dir, "r7"),
    ]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/the safe loader refuses/);
    expect(res.stderr).toMatch(/--allow-pickle/);
  });

  test("--device cuda on a machine without a GPU is a usage error", async () => {
    const gpu = spawnSync(PYTHON, ["-c", "import torch; print(torch.cuda.is_available())"])
      .stdout.toString()
      .trim();
    if (gpu === "True") return; // this check is for machines without one
    const res = await torchlens([
      "extract",
      fixture("cnn.py"),
      "--device",
      "cuda",
      "-o",
      path.join(tmp.dir, "r8"),
    ]);
    expect(res.exitCode).toBe(2);
    expect(res.stderr).toMatch(/--device cuda was asked for, but this torch sees no GPU/);
  });

  test("ls, show and validate on a directory that is not a run, or an unfinished one, exit 2", async () => {
    const partial = path.join(tmp.dir, "elsewhere", ".x.partial-1-abc");
    mkdirSync(partial, { recursive: true });
    for (const cmd of [
      ["ls", tmp.dir],
      ["show", tmp.dir, "relu_1_1"],
      ["validate", partial],
      ["ls", partial],
    ]) {
      const res = await torchlens(cmd);
      expect(res.exitCode).toBe(2);
      expect(res.stderr).toMatch(/not a torchlens run|unfinished run/);
    }
  });
});

describe("faults: the run never looks complete, no stray processes, no hang", () => {
  test.each([
    ["killed with SIGKILL", "os.kill(os.getpid(), signal.SIGKILL)", /killed by SIGKILL/],
    ["segfaulting", "ctypes.string_at(0)", /killed by SIGSEGV/],
  ])(
    "an agent %s mid-run is reported with its signal within seconds, exit 1, no run left",
    async (name, how, message) => {
      const file = model(
        `dies_${name.split(" ")[0]}`,
        `import os, signal, ctypes\nclass Net(nn.Module):\n    def forward(self, x):\n        y = x * 2\n        ${how}\n        return y\n\ndef build_model():\n    return Net()`,
      );
      const run = path.join(tmp.dir, `dead_${name.split(" ")[0]}`);
      const t0 = Date.now();
      const res = await torchlens(["extract", file, "--input-shape", "3", "-o", run]);
      expect(res.exitCode).toBe(1);
      expect(res.stderr).toMatch(message);
      expect(Date.now() - t0).toBeLessThan(30_000); // a hang would hit this, not a slow machine
      expect(existsSync(run)).toBe(false);
      expect(leftovers()).toEqual([]);
    },
  );

  test.each([
    ["SIGTERM", 143],
    ["SIGINT", 130],
  ])(
    "%s to the CLI stops the agent, removes the unfinished run and exits %i",
    async (signal, code) => {
      const file = model(
        `slow_${signal}`,
        "import time\nclass Net(nn.Module):\n    def forward(self, x):\n        print('FORWARD-STARTED', flush=True)\n        time.sleep(60)\n        return x\n\ndef build_model():\n    return Net()",
      );
      const run = path.join(tmp.dir, `slow_run_${signal}`);
      const child = spawn("node", [BIN, "extract", file, "--input-shape", "3", "-o", run], {
        cwd: ROOT,
        env: { ...process.env, TORCHLENS_PYTHON: PYTHON },
      });
      let stderr = "";
      await new Promise<void>((resolve) => {
        child.stderr.on("data", (d: Buffer) => {
          stderr += d.toString();
          if (stderr.includes("FORWARD-STARTED")) resolve();
        });
      });
      const agents = () =>
        spawnSync("pgrep", ["-f", file]).stdout.toString().trim().split("\n").filter(Boolean);
      expect(agents().length).toBeGreaterThan(0);
      child.kill(signal as NodeJS.Signals);
      const exitCode = await new Promise<number | null>((resolve) =>
        child.on("exit", (c) => resolve(c)),
      );
      expect(exitCode).toBe(code);
      expect(existsSync(run)).toBe(false);
      expect(leftovers()).toEqual([]);
      await new Promise((r) => setTimeout(r, 500));
      expect(agents()).toEqual([]);
    },
  );

  test("a disk that fills up mid-run gives a clear error and leaves no partial run", async () => {
    const mnt = path.join(tmp.dir, "small-disk");
    mkdirSync(mnt);
    const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt]);
    if (mounted.status !== 0) {
      console.warn(
        `skipped: cannot mount a small tmpfs here (${mounted.stderr.toString().trim()})`,
      );
      return;
    }
    try {
      const res = await torchlens(
        ["extract", path.join(ROOT, "bench/models/bigconv.py"), "-o", path.join(mnt, "run")],
        { env: { TORCHLENS_BENCH_MB: "20" } },
      );
      expect(res.exitCode).toBe(1);
      expect(res.stderr).toMatch(/the disk is full/);
      expect(res.stderr).toMatch(/fix: free some space or write the run elsewhere/);
      expect(readdirSync(mnt)).toEqual([]);
    } finally {
      spawnSync("umount", [mnt]);
    }
  });

  test("user code that reads stdin, starts a printing thread and changes directory does not disturb the run", async () => {
    const file = model(
      "unruly",
      [
        "import os, sys, threading",
        "class Net(nn.Module):",
        "    def forward(self, x):",
        "        got = sys.stdin.read()",
        "        print('STDIN-GAVE', repr(got))",
        "        t = threading.Thread(target=lambda: print('THREAD-PRINTED'))",
        "        t.start(); t.join()",
        "        os.chdir('/')",
        "        return x + 1",
        "",
        "def build_model():",
        "    return Net()",
      ].join("\n"),
    );
    const run = path.join(tmp.dir, "unruly_run");
    const res = await torchlens(["extract", file, "--input-shape", "3", "-o", run, "--json"], {
      input: "DATA-ON-STDIN",
    });
    expect(res.exitCode).toBe(0);
    expect(res.stderr).toContain("STDIN-GAVE ''");
    expect(res.stderr).toContain("THREAD-PRINTED");
    expect(existsSync(path.join(run, "activations.npz"))).toBe(true);
    expect(JSON.parse(res.stdout).passes).toBe(3);
  });
});

describe("untrusted names", () => {
  test("module names that look like paths cannot put files outside the run", async () => {
    const file = model(
      "paths",
      "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.add_module('/tmp/evil', nn.Linear(3, 3))\n        self.add_module('~/\\\\x', nn.ReLU())\n    def forward(self, x):\n        return getattr(self, '~/\\\\x')(getattr(self, '/tmp/evil')(x))\n\ndef build_model():\n    return Net()",
    );
    const run = path.join(tmp.dir, "paths_run");
    const res = await torchlens(["extract", file, "--input-shape", "3", "-o", run]);
    expect(res.exitCode).toBe(0);
    expect(readdirSync(run).sort()).toEqual(["activations.npz", "log.json", "manifest.json"]);
    const log = JSON.parse(readFileSync(path.join(run, "log.json"), "utf8"));
    expect(log.modules.map((m: { address: string }) => m.address)).toEqual([
      "",
      "/tmp/evil",
      "~/\\x",
    ]);
    const ls = await torchlens(["ls", run, "--modules"]);
    expect(ls.exitCode).toBe(0);
    expect(existsSync("/tmp/evil")).toBe(false);
  });
});
