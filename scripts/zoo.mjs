#!/usr/bin/env node
/**
 * `npm run zoo`: every torchvision and torchaudio model through the real CLI — `extract --json`,
 * then `validate --json` — one model at a time, each step under a timeout and a memory ceiling.
 * Results accumulate in zoo/results.json (so a partial run, `--only` or `--family`, updates its
 * rows and keeps the others); docs/COVERAGE.md is regenerated from it after every model.
 * The models and their inputs are defined in zoo/models.py. See `node scripts/zoo.mjs --help`.
 */
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const BIN = path.join(ROOT, "bin/torchlens.js");
const MODELS = path.join(ROOT, "zoo/models.py");
const RESULTS = path.join(ROOT, "zoo/results.json");
const COVERAGE = path.join(ROOT, "docs/COVERAGE.md");
const PYTHON = process.env.TORCHLENS_PYTHON || "/usr/bin/python3";
const FAMILIES = [
  "classification",
  "detection",
  "segmentation",
  "video",
  "optical_flow",
  "quantization",
  "audio",
];

const HELP = `usage: npm run zoo -- [options]

Builds each zoo model (zoo/models.py: torchvision's list_models() and torchaudio's builders, with
weights=None and a small seeded input), runs torchlens extract then validate on it through the CLI,
and writes docs/COVERAGE.md. Runs go under $TMPDIR (default /tmp) and are removed.

  --only NAMES      only these models (comma-separated)
  --family NAMES    only these families: ${FAMILIES.join(", ")}
  --skip NAMES      leave these out of this run (they keep their previous rows)
  --jobs N          models run at once (default 1: each model already uses the cores)
  --timeout S       seconds each of extract and validate may take (default 600)
  --mem-limit GIB   kill a model whose processes together pass this resident size (default 16)
  --keep DIR        keep each model's run as DIR/<model> (for diagnosis) instead of removing it
  --stale           only models with no row, or a row made by another version of the agent
  --fresh           forget earlier results (zoo/results.json) before running
  --report          only regenerate docs/COVERAGE.md from zoo/results.json
  --list            print the models and their inputs, run nothing`;

function parse() {
  const { values } = parseArgs({
    options: {
      only: { type: "string" },
      family: { type: "string" },
      skip: { type: "string" },
      jobs: { type: "string", default: "1" },
      timeout: { type: "string", default: "600" },
      "mem-limit": { type: "string", default: "16" },
      fresh: { type: "boolean", default: false },
      stale: { type: "boolean", default: false },
      keep: { type: "string" },
      report: { type: "boolean", default: false },
      list: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const list = (s) =>
    s
      ? s
          .split(",")
          .map((x) => x.trim())
          .filter(Boolean)
      : null;
  const opts = {
    only: list(values.only),
    families: list(values.family),
    skip: list(values.skip) ?? [],
    jobs: Number(values.jobs),
    timeoutS: Number(values.timeout),
    memLimit: Number(values["mem-limit"]) * 2 ** 30,
    fresh: values.fresh,
    stale: values.stale,
    keep: values.keep ? path.resolve(values.keep) : null,
    report: values.report,
    list: values.list,
  };
  for (const f of opts.families ?? []) {
    if (!FAMILIES.includes(f)) usage(`unknown family ${f}; families: ${FAMILIES.join(", ")}`);
  }
  if (!(opts.jobs >= 1) || !(opts.timeoutS > 0) || !(opts.memLimit > 0)) {
    usage("--jobs, --timeout and --mem-limit take positive numbers");
  }
  return opts;
}

function usage(message) {
  console.error(`zoo: ${message}\n\n${HELP}`);
  process.exit(2);
}

// -- which torchlens ran: others edit the agent and the CLI while the zoo runs ---------------------

/** The agent's Python: what it records and how it replays decide every result. (The built CLI is
 * left out: others rebuild it all the time for changes that do not touch extract or validate;
 * each row keeps the git commit it ran at instead.) */
function agentFiles() {
  const dir = path.join(ROOT, "python_agent/torchlens_agent");
  return fs
    .readdirSync(dir, { recursive: true })
    .map(String)
    .filter((n) => n.endsWith(".py"))
    .sort()
    .map((n) => path.join(dir, n));
}

/** A short hash of the agent, so each row says which agent produced it. */
function fingerprint() {
  const hash = createHash("sha256");
  for (const f of agentFiles()) {
    hash.update(path.relative(ROOT, f));
    hash.update(fs.readFileSync(f));
  }
  return hash.digest("hex").slice(0, 12);
}

function gitHead() {
  const head = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" });
  const dirty = spawnSync(
    "git",
    [
      "status",
      "--porcelain",
      "python_agent/torchlens_agent",
      "src/agent",
      "src/cli",
      "src/log",
      "src/store",
      "src/validate",
    ],
    {
      cwd: ROOT,
      encoding: "utf8",
    },
  );
  if (head.status !== 0) return null;
  return `${head.stdout.trim()}${dirty.stdout.trim() ? " + uncommitted changes" : ""}`;
}

// -- the catalogue ----------------------------------------------------------------------------------

function catalogue() {
  const res = spawnSync(PYTHON, [MODELS, "list"], { encoding: "utf8", maxBuffer: 16 << 20 });
  if (res.status !== 0) {
    console.error(`zoo: ${PYTHON} ${MODELS} list failed:\n${res.stderr}`);
    process.exit(2);
  }
  return JSON.parse(res.stdout);
}

// -- running one CLI command with a timeout and a memory ceiling ------------------------------------

/** Resident bytes of every process in process group `pgid` (Linux /proc). */
function groupRss(pgid) {
  let total = 0;
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      // fields after the command name (which may hold spaces): state ppid pgrp ... rss is field 24
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(rest[2]) !== pgid) continue;
      total += Number(rest[21]) * 4096;
    } catch {
      // the process ended while we looked
    }
  }
  return total;
}

/**
 * Run `node bin/torchlens.js ...args` in its own process group. Resolves with the exit code,
 * stdout, the tail of stderr, the wall time, the peak resident size of the group, and why it was
 * killed (timeout, memory), if it was.
 */
/** What is running now, so that Ctrl-C or SIGTERM stops it and leaves nothing under /tmp. */
const live = { groups: new Set(), dirs: new Set() };
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    for (const pgid of live.groups) {
      try {
        process.kill(-pgid, "SIGKILL");
      } catch {}
    }
    for (const dir of live.dirs) fs.rmSync(dir, { recursive: true, force: true });
    console.error(`zoo: stopped by ${signal}; the models run so far are in zoo/results.json`);
    process.exit(signal === "SIGINT" ? 130 : 143);
  });
}

function runCli(args, env, { timeoutS, memLimit }) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: ROOT,
      env: { ...process.env, TORCHLENS_PYTHON: PYTHON, ...env },
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    live.groups.add(child.pid);
    const out = [];
    let err = "";
    let peak = 0;
    let killed = null;
    child.stdout.on("data", (b) => out.push(b));
    child.stderr.on("data", (b) => {
      err = (err + b.toString()).slice(-20000);
    });
    const kill = (why) => {
      if (killed) return;
      killed = why;
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {}
      setTimeout(() => {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {}
      }, 5000).unref();
    };
    const watch = setInterval(() => {
      const rss = groupRss(child.pid);
      peak = Math.max(peak, rss);
      if (rss > memLimit) kill("memory");
    }, 500);
    const timer = setTimeout(() => kill("timeout"), timeoutS * 1000);
    child.on("close", (code, signal) => {
      live.groups.delete(child.pid);
      clearInterval(watch);
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString(),
        stderr: err,
        seconds: (performance.now() - t0) / 1000,
        peak,
        killed,
      });
    });
  });
}

// -- one model ---------------------------------------------------------------------------------------

function firstLines(text, n = 2) {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter(
      (l) =>
        l &&
        !/Warning|warnings\.warn|^\s*return _VF|Triggered internally|^validating .*: running the model file/.test(
          l,
        ),
    )
    .slice(0, n)
    .join(" / ");
}

function cliError(res, step, opts) {
  if (res.killed === "timeout") return `${step} timed out after ${opts.timeoutS} s`;
  if (res.killed === "memory") {
    return `${step} stopped: its processes passed ${(opts.memLimit / 2 ** 30).toFixed(0)} GiB resident`;
  }
  if (res.signal) return `${step} killed by ${res.signal}`;
  const msg = firstLines(res.stderr, 3) || firstLines(res.stdout, 3) || `exit ${res.code}`;
  return `${step} exit ${res.code}: ${msg}`;
}

/** What went wrong in a validation report, in one line; null when it passed. */
function reportFailure(report) {
  if (report.ok) return null;
  const parts = [];
  const failed = report.verdicts.filter((v) => v.status === "failed");
  if (failed.length) {
    // group by func and the reason's first words, so one cause reads as one entry
    const groups = new Map();
    for (const v of failed) {
      const reason = (v.reason ?? "").replace(/\d+(\.\d+)?(e-?\d+)?/g, "N").slice(0, 90);
      const key = `${v.func}: ${reason}`;
      if (!groups.has(key)) groups.set(key, { first: v, n: 0 });
      groups.get(key).n += 1;
    }
    const shown = [...groups.values()]
      .slice(0, 3)
      .map(
        (g) =>
          `${g.first.label} [${g.first.func}]${g.n > 1 ? ` (+${g.n - 1} alike)` : ""}: ${g.first.reason}`,
      );
    parts.push(
      `${failed.length} of ${report.counts.total} passes failed: ${shown.join("; ")}${groups.size > 3 ? `; … ${groups.size - 3} more kinds` : ""}`,
    );
  }
  for (const g of report.ground_truth.filter((g) => !g.ok)) {
    parts.push(`output ${g.pass ?? "?"} differs from a plain forward pass: ${g.reason}`);
  }
  if (!report.accounting.ok) {
    parts.push(
      `op accounting: ${report.accounting.ops_in_log} ops in the log, ${report.accounting.ops_dispatched} dispatched`,
    );
  }
  if (report.missing.length) {
    parts.push(`${report.missing.length} passes never met on replay (first ${report.missing[0]})`);
  }
  if (report.corrupted.length) parts.push(`${report.corrupted.length} arrays fail their CRC`);
  return parts.join(" | ") || "validation failed";
}

/** Facts about the graph that validation does not judge: tensors met as constants inside the
 * forward pass (often the output of a call torchlens did not wrap) and outputs no input reaches. */
function graphNotes(run) {
  const log = JSON.parse(fs.readFileSync(path.join(run, "log.json"), "utf8"));
  const constants = log.passes.filter((p) => p.kind === "constant");
  const unreached = log.passes.filter((p) => p.is_output && p.distance_from_input === null);
  const notes = [];
  if (constants.length) {
    const first = constants[0];
    const users = first.children
      .slice(0, 1)
      .map((c) => log.passes.find((p) => p.label === c)?.func);
    notes.push(
      `${constants.length} constant source(s) (first ${first.label} ${JSON.stringify(first.shape)} ${first.dtype}, used by ${users.join(",") || "nothing"})`,
    );
  }
  if (unreached.length) {
    notes.push(`${unreached.length} of ${log.outputs.length} outputs not reached from an input`);
  }
  return { constants: constants.length, unreached: unreached.length, notes: notes.join("; ") };
}

async function runModel(model, opts) {
  const row = {
    name: model.name,
    family: model.family,
    input: model.input,
    date: new Date().toISOString().slice(0, 10),
  };
  if (model.skip) return { ...row, status: "cannot run", reason: model.skip };
  row.agent = fingerprint();
  row.git = gitHead();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "torchlens-zoo-"));
  live.dirs.add(tmp);
  const run = path.join(tmp, "run");
  const env = { TORCHLENS_ZOO_MODEL: model.name };
  try {
    const ex = await runCli(["extract", MODELS, "-o", run, "--json"], env, opts);
    row.extract_s = ex.seconds;
    row.peak_rss = ex.peak;
    if (ex.code !== 0) {
      const status = ex.killed === "memory" ? "cannot run" : "failed";
      return { ...row, status, stage: "extract", reason: cliError(ex, "extract", opts) };
    }
    const summary = JSON.parse(ex.stdout);
    Object.assign(row, {
      passes: summary.passes,
      layers: summary.layers,
      bytes: summary.bytes,
      forward_ms: summary.forward_ms,
    });
    Object.assign(row, graphNotes(run));
    const va = await runCli(["validate", run, "--json"], env, opts);
    row.validate_s = va.seconds;
    row.peak_rss = Math.max(row.peak_rss, va.peak);
    let report = null;
    try {
      report = JSON.parse(va.stdout);
    } catch {}
    if (!report || (va.code !== 0 && va.code !== 1)) {
      const status = va.killed === "memory" ? "cannot run" : "failed";
      return { ...row, status, stage: "validate", reason: cliError(va, "validate", opts) };
    }
    if (fingerprint() !== row.agent) {
      return {
        ...row,
        status: "stale",
        reason: "the agent changed between extract and validate; run it again",
      };
    }
    row.counts = report.counts;
    row.exemptions = report.exemptions;
    // the failing verdicts, for diagnosis in zoo/results.json (not in the table)
    row.failures = report.verdicts
      .filter((v) => v.status === "failed")
      .slice(0, 40)
      .map((v) => ({ label: v.label, func: v.func, reason: v.reason }));
    const failure = reportFailure(report);
    if (failure) return { ...row, status: "failed", stage: "validate", reason: failure };
    return { ...row, status: "passed" };
  } catch (exc) {
    return {
      ...row,
      status: "failed",
      stage: "zoo",
      reason: String(exc?.stack ?? exc).split("\n")[0],
    };
  } finally {
    if (opts.keep) {
      fs.mkdirSync(opts.keep, { recursive: true });
      fs.rmSync(path.join(opts.keep, model.name), { recursive: true, force: true });
      if (fs.existsSync(run)) fs.renameSync(run, path.join(opts.keep, model.name));
    }
    fs.rmSync(tmp, { recursive: true, force: true });
    live.dirs.delete(tmp);
  }
}

// -- the report -------------------------------------------------------------------------------------

function fmtBytes(n) {
  if (n == null) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

const fmtS = (s) => (s == null ? "" : s.toFixed(1));
const cell = (s) =>
  String(s ?? "")
    .replaceAll("|", "\\|")
    .replaceAll("\n", " ");

/** Whether a row needs running again: none yet, interrupted, or made by another agent. */
function outdated(row, agent) {
  return !row || row.status === "not run" || row.status === "stale" || row.agent !== agent;
}

function coverage(cat, results) {
  const agent = fingerprint();
  const rows = cat.models.map(
    (m) => results[m.name] ?? { name: m.name, family: m.family, input: m.input, status: "not run" },
  );
  const done = (r) => r.status === "passed" || r.status === "failed" || r.status === "cannot run";
  const count = (s) => rows.filter((r) => r.status === s).length;
  const older = rows.filter((r) => done(r) && r.agent !== agent);
  const dates = rows.filter((r) => r.date).map((r) => r.date);
  const newest = dates.sort().at(-1) ?? new Date().toISOString().slice(0, 10);
  const v = cat.versions;
  // agents in use, newest (the current one) first, as short names for the table
  const agents = [agent, ...new Set(older.map((r) => r.agent ?? "unknown"))];
  const agentName = (a) => (a === agent ? "current" : `A${agents.indexOf(a)}`);
  const commitsOf = (a) =>
    [
      ...new Set(rows.filter((r) => done(r) && (r.agent ?? "unknown") === a).map((r) => r.git)),
    ].join(", ");
  const total =
    `**${count("passed")} of ${rows.length} models pass extract + validate**: ` +
    `${count("failed")} fail, ${count("cannot run")} cannot run on this machine, ` +
    `${rows.length - rows.filter(done).length} not run this time` +
    (older.length
      ? `; ${older.length} of the results come from an earlier agent (see *agent*).`
      : ".");
  const lines = [
    "# Model coverage",
    "",
    `Generated by \`npm run zoo\` (scripts/zoo.mjs, models and inputs in zoo/models.py) on ${newest}`,
    `with torch ${v.torch}, torchvision ${v.torchvision}, torchaudio ${v.torchaudio ?? "(not installed)"},`,
    `Python ${v.python}; ${os.cpus().length} CPU cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB memory, CPU only.`,
    "Every model is built with `weights=None` (and `weights_backbone=None`), in eval mode, seeded.",
    "Each row is one `torchlens extract --json` (the default `--no-grad`: the forward pass runs",
    "under torch.no_grad(), as inference code runs it) then `torchlens validate --json` through the CLI;",
    "*passed* means every pass replayed from its saved parents to its saved value, every parent",
    "mattered (or an exemption rule applied), the outputs matched a plain forward pass in the same",
    "grad mode, the op counts agreed, and the completeness check found every tensor-making torch",
    "call recorded (docs/capture.md). *peak RSS* is the largest resident size of the CLI and agent together.",
    "",
    `The agent changes while the zoo runs; *agent* names the one each row ran with (a hash of`,
    "python_agent/torchlens_agent/**/*.py, with the git commits seen with it). `npm run zoo -- --stale`",
    "runs again every row not made by the current agent.",
    "",
    "On a machine with a GPU and no Node, `python3 -m pytest python_agent -k zoo --device cuda`",
    "(python_agent/tests/test_zoo_models.py) extracts and validates a few of these models",
    "(resnet18, vit_b_16, fasterrcnn_mobilenet_v3_large_320_fpn, wav2vec2_base) and the trickiest",
    "fixtures through the agent alone, on the GPU.",
    "",
    ...agents
      .filter((a) => a === agent || older.some((r) => (r.agent ?? "unknown") === a))
      .map((a) => `- ${agentName(a)}: ${a}${commitsOf(a) ? ` (git ${commitsOf(a)})` : ""}`),
    "",
    total,
    "",
  ];
  for (const family of FAMILIES) {
    const fam = rows.filter((r) => r.family === family);
    if (!fam.length) continue;
    const ok = fam.filter((r) => r.status === "passed").length;
    lines.push(`## ${family} (${ok} of ${fam.length} pass)`, "");
    lines.push(
      "| model | input | passes | layers | bytes | extract s | validate s | peak RSS | agent | result |",
    );
    lines.push("|---|---|---:|---:|---:|---:|---:|---:|---|---|");
    for (const r of fam) {
      let result = r.status === "stale" ? "not run this time (interrupted)" : r.status;
      if (r.status === "failed") result = `**failed** (${r.stage}): ${r.reason}`;
      else if (r.status === "cannot run") result = `cannot run here: ${r.reason}`;
      if (r.date && r.date !== newest) result += ` (run ${r.date})`;
      const who = done(r) ? agentName(r.agent ?? "unknown") : "";
      lines.push(
        `| ${cell(r.name)} | ${cell(r.input)} | ${r.passes ?? ""} | ${r.layers ?? ""} | ${fmtBytes(r.bytes)} | ` +
          `${fmtS(r.extract_s)} | ${fmtS(r.validate_s)} | ${r.peak_rss ? fmtBytes(r.peak_rss) : ""} | ${who} | ${cell(result)} |`,
      );
    }
    lines.push("");
  }
  const noted = rows.filter((r) => r.notes);
  if (noted.length) {
    lines.push(
      "## Graph notes",
      "",
      "Not judged by validate, listed for review: *constant* sources met inside the forward pass",
      "(a tensor no recorded op produced: often the output of a call torchlens does not wrap, such",
      "as `torch.ops.*`), and outputs that no input reaches in the recorded graph.",
      "",
      "| model | note |",
      "|---|---|",
      ...noted.map((r) => `| ${cell(r.name)} | ${cell(r.notes)} |`),
      "",
    );
  }
  lines.push(total.replaceAll("**", ""), "");
  return lines.join("\n");
}

function loadResults(fresh) {
  if (fresh || !fs.existsSync(RESULTS)) return {};
  return JSON.parse(fs.readFileSync(RESULTS, "utf8")).models ?? {};
}

function save(cat, results) {
  fs.writeFileSync(
    RESULTS,
    `${JSON.stringify({ versions: cat.versions, models: results }, null, 1)}\n`,
  );
  fs.writeFileSync(COVERAGE, coverage(cat, results));
}

// -- main --------------------------------------------------------------------------------------------

async function main() {
  const opts = parse();
  const cat = catalogue();
  if (opts.list) {
    for (const m of cat.models)
      console.log(`${m.family.padEnd(15)} ${m.name.padEnd(38)} ${m.input}`);
    return;
  }
  const results = loadResults(opts.fresh);
  if (opts.report) {
    save(cat, results);
    console.log(`zoo: wrote ${path.relative(ROOT, COVERAGE)}`);
    return;
  }
  const agentNow = fingerprint();
  const known = new Set(cat.models.map((m) => m.name));
  for (const n of opts.only ?? []) if (!known.has(n)) usage(`no model named ${n} (see --list)`);
  const todo = cat.models.filter(
    (m) =>
      (!opts.only || opts.only.includes(m.name)) &&
      (!opts.families || opts.families.includes(m.family)) &&
      !opts.skip.includes(m.name) &&
      (!opts.stale || outdated(results[m.name], agentNow)),
  );
  console.log(`zoo: ${todo.length} models, ${opts.jobs} at a time, ${opts.timeoutS} s per step`);
  const t0 = performance.now();
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < todo.length) {
      const model = todo[next++];
      const row = await runModel(model, opts);
      results[model.name] = row;
      save(cat, results);
      done += 1;
      const what = row.status === "passed" ? "passed" : `${row.status}: ${row.reason}`;
      const times = `extract ${fmtS(row.extract_s) || "-"} s, validate ${fmtS(row.validate_s) || "-"} s`;
      console.log(`[${done}/${todo.length}] ${model.name}: ${what.slice(0, 300)} (${times})`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.jobs, todo.length) }, worker));
  const passed = todo.filter((m) => results[m.name].status === "passed").length;
  const mins = ((performance.now() - t0) / 60000).toFixed(1);
  console.log(
    `zoo: ${passed} of ${todo.length} passed in ${mins} min; wrote ${path.relative(ROOT, COVERAGE)}`,
  );
  process.exitCode = passed === todo.length ? 0 : 1;
}

await main();
