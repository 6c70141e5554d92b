/** One measurement of each kind: extract through the CLI, and the Python baselines. */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { runMonitored } from "./procmon.mjs";
import { PYTHON, parseLastJson } from "./python.mjs";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const CLI = path.join(ROOT, "bin/torchlens.js");
const TIMEOUT_MS = 15 * 60 * 1000;

function tail(text, n = 1500) {
  return text.length > n ? `…${text.slice(-n)}` : text;
}

function failure(what, r) {
  const why = r.signal ? `signal ${r.signal}` : `exit ${r.code}`;
  return new Error(`${what} failed (${why}):\n${tail(r.stderr.trim() || r.stdout.trim())}`);
}

/** Which process a /proc entry was: the CLI, the agent, a discovery try, or something else. */
function labelProcs(r) {
  const agents = r.procs.filter((p) => p.cmd?.includes("torchlens_agent"));
  const agent = agents.reduce((a, b) => (!a || b.hwm > a.hwm ? b : a), null);
  return r.procs.map((p) => {
    let label;
    if (p.pid === r.root) label = "cli (node)";
    else if (p === agent) label = "agent (python)";
    else if (agents.includes(p))
      label =
        "python discovery: a candidate not used (it lacked a package, or was a standby not needed)";
    else if (agent && p.firstMs <= agent.firstMs)
      label = `python discovery: ${p.cmd ? path.basename(p.cmd.split(" ")[0]) : "(exited before its command line was read)"}`;
    else label = `other: ${p.cmd ? path.basename(p.cmd.split(" ")[0]) : "(no command line)"}`;
    return {
      label,
      pid: p.pid,
      cmd: p.cmd,
      maxRss: p.maxRss,
      hwm: p.hwm,
      cpuMs: p.cpuMs,
      lifeMs: p.lastMs - p.firstMs,
    };
  });
}

/** `torchlens extract MODEL -o DIR --json`: the summary, wall time, tree memory, array sizes. */
export async function extract(model, outDir, { wantSizes = false } = {}) {
  const env = { ...process.env, ...model.env };
  const r = await runMonitored(
    process.execPath,
    [CLI, "extract", model.file, "-o", outDir, "--json"],
    {
      env,
      cwd: ROOT,
      timeoutMs: TIMEOUT_MS,
    },
  );
  try {
    if (r.code !== 0) throw failure(`torchlens extract ${model.name}`, r);
    const summary = parseLastJson(r.stdout);
    if (!summary) throw failure(`torchlens extract ${model.name} (no JSON summary)`, r);
    const npz = fs.statSync(path.join(outDir, "activations.npz")).size;
    let sizes = null;
    if (wantSizes) {
      const log = JSON.parse(fs.readFileSync(path.join(outDir, "log.json"), "utf8"));
      sizes = log.passes.filter((p) => p.saved && p.array).map((p) => p.nbytes);
    }
    return {
      wallMs: r.wallMs,
      othersCores: r.othersCores,
      peakSum: r.peakSum,
      sumOfHwm: r.sumOfHwm,
      samples: r.samples,
      procs: labelProcs(r),
      summary,
      npzBytes: npz,
      sizes,
    };
  } finally {
    fs.rmSync(outDir, { recursive: true, force: true });
  }
}

/** A harness mode in a fresh /usr/bin/python3: its JSON line plus the process's wall and memory. */
export async function python(harness, args, { env = {}, what } = {}) {
  const r = await runMonitored(PYTHON, [harness, ...args], {
    env: { ...process.env, ...env },
    cwd: ROOT,
    timeoutMs: TIMEOUT_MS,
  });
  if (r.code !== 0) throw failure(what ?? `python ${args[0]}`, r);
  const json = parseLastJson(r.stdout);
  if (!json) throw failure(`${what ?? `python ${args[0]}`} (no JSON line)`, r);
  return { wallMs: r.wallMs, othersCores: r.othersCores, peakSum: r.peakSum, ...json };
}

export async function plain(harness, model, grad) {
  return python(harness, ["plain", model.file, grad ? "grad" : "nograd"], {
    env: model.env,
    what: `plain forward of ${model.name}`,
  });
}

export async function hooks(harness, model, dir) {
  fs.mkdirSync(dir, { recursive: true });
  try {
    return await python(harness, ["hooks", model.file, dir], {
      env: model.env,
      what: `hooks on ${model.name}`,
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function npwrite(harness, sizesFile, outFile) {
  try {
    return await python(harness, ["npwrite", sizesFile, outFile], { what: "numpy write" });
  } finally {
    fs.rmSync(outFile, { force: true });
  }
}

/**
 * bench/agent_overhead.py once: the per-op overhead of the agent with no CLI beside it (its pipe
 * drained by a Python reader), and in process, warm, with frames dropped, packed, or written.
 */
export async function agentAlone(model) {
  return python("bench/agent_overhead.py", [model.file, "--runs", "1", "--json"], {
    env: model.env,
    what: `agent alone on ${model.name}`,
  });
}

/** `node bin/torchlens.js --version`: Node's start plus loading every CLI module, then exit. */
export async function nodeBoot() {
  const r = await runMonitored(process.execPath, [CLI, "--version"], { cwd: ROOT });
  if (r.code !== 0) throw failure("torchlens --version", r);
  return { wallMs: r.wallMs, peakSum: r.peakSum };
}
