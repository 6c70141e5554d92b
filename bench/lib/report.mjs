/** Derived figures, target verdicts, the stdout table and bench/RESULTS.md. */
import { cell, fmt, MB, summarize } from "./stats.mjs";

/** Per-run derived figures for one model (every run that has all the parts it needs). */
export function derive(runs) {
  return runs.map((r) => {
    const d = {};
    const x = r.extract;
    if (!x) return d;
    const s = x.summary;
    d.bytes = s.bytes;
    d.passes = s.passes;
    d.mbpsForward = s.forward_ms > 0 ? s.bytes / MB / (s.forward_ms / 1000) : null;
    d.mbpsWall = s.bytes / MB / (x.wallMs / 1000);
    // first_op_ms counts from the CLI process's start (Node's time origin, a few ms after exec)
    d.firstOpFromStartMs = s.first_op_ms;
    d.afterForwardMs =
      d.firstOpFromStartMs === null ? null : x.wallMs - d.firstOpFromStartMs - s.forward_ms;
    // extract runs the model under no_grad unless --grad (as the bench runs it): the plain forward
    // it is held against is the no_grad one
    const plain = r.plainNograd;
    if (plain) {
      // the time the bytes added to the forward pass: the rate at which they moved on top of it
      const extraMs = s.forward_ms - plain.forward_ms;
      d.mbpsTransfer = extraMs > 0 ? s.bytes / MB / (extraMs / 1000) : null;
      d.overheadUs = ((s.forward_ms - plain.forward_ms) * 1000) / s.passes;
      d.memOverNograd = x.peakSum - plain.peak_rss;
    }
    if (r.plainGrad) d.memOverGrad = x.peakSum - r.plainGrad.peak_rss;
    if (r.npwrite) {
      d.npwriteMbps = r.npwrite.bytes / MB / (r.npwrite.write_ms / 1000);
      if (plain) {
        const transferMs = r.npwrite.write_ms; // the same bytes, copied once at the numpy-write rate
        d.overheadExclUs = ((s.forward_ms - plain.forward_ms - transferMs) * 1000) / s.passes;
        d.wallRatio = x.wallMs / (plain.wallMs + r.npwrite.write_ms);
      }
    }
    return d;
  });
}

const pick = (runs, f) => summarize(runs.map((r) => (r ? f(r) : null)));

/** Summaries of every figure a table shows, keyed by name. */
export function summarizeModel(m) {
  const runs = m.runs;
  const der = derive(runs);
  const S = {};
  const g = (k, f) => {
    S[k] = pick(runs, f);
  };
  g("xWall", (r) => r.extract?.wallMs);
  g("xForward", (r) => r.extract?.summary.forward_ms);
  g("xPeakSum", (r) => r.extract?.peakSum);
  g("xSumHwm", (r) => r.extract?.sumOfHwm);
  g("xPasses", (r) => r.extract?.summary.passes);
  g("xBytes", (r) => r.extract?.summary.bytes);
  g("xNpz", (r) => r.extract?.npzBytes);
  g("xSamples", (r) => r.extract?.samples);
  for (const [key, part] of [
    ["pg", "plainGrad"],
    ["pn", "plainNograd"],
    ["hk", "hooks"],
  ]) {
    g(`${key}Wall`, (r) => r[part]?.wallMs);
    g(`${key}Import`, (r) => r[part]?.import_ms);
    g(`${key}Build`, (r) => r[part]?.build_ms);
    g(`${key}Forward`, (r) => r[part]?.forward_ms);
    g(`${key}Peak`, (r) => r[part]?.peak_rss);
  }
  g("hkArrays", (r) => r.hooks?.arrays);
  g("boot", (r) => r.boot?.wallMs);
  g("impWall", (r) => r.importTorch?.wallMs);
  g("othersBefore", (r) => r.othersBeforeCores);
  g("busy", (r) => {
    const parts = [r.extract, r.plainGrad, r.plainNograd, r.hooks, r.npwrite].filter(Boolean);
    const wall = parts.reduce((a, x) => a + x.wallMs, 0);
    return wall ? parts.reduce((a, x) => a + (x.othersCores ?? 0) * x.wallMs, 0) / wall : null;
  });
  g("xBusy", (r) => r.extract?.othersCores);
  g("hkBytes", (r) => r.hooks?.bytes);
  g("aloneUs", (r) => r.agentAlone?.agent_us);
  g("warmDropUs", (r) => r.agentAlone?.warm_drop_us);
  g("warmPackUs", (r) => r.agentAlone?.warm_pack_us);
  g("warmWireUs", (r) => r.agentAlone?.warm_wire_us);
  g("npWall", (r) => r.npwrite?.wallMs);
  g("npWrite", (r) => r.npwrite?.write_ms);
  g("npPeak", (r) => r.npwrite?.peak_rss);
  for (const k of [
    "afterForwardMs",
    "overheadUs",
    "overheadExclUs",
    "mbpsForward",
    "mbpsTransfer",
    "mbpsWall",
    "firstOpFromStartMs",
    "memOverGrad",
    "memOverNograd",
    "npwriteMbps",
    "wallRatio",
  ]) {
    S[k] = summarize(der.map((d) => d[k]));
  }
  // each process's own max (VmHWM), by role
  const labels = new Set();
  for (const r of runs) for (const p of r.extract?.procs ?? []) labels.add(p.label);
  S.procs = [...labels].map((label) => ({
    label,
    hwm: summarize(
      runs.map(
        (r) =>
          r.extract?.procs
            .filter((p) => p.label === label)
            .reduce((a, p) => Math.max(a, p.hwm), 0) || null,
      ),
    ),
    cpuMs: summarize(
      runs.map(
        (r) =>
          r.extract?.procs.filter((p) => p.label === label).reduce((a, p) => a + p.cpuMs, 0) ??
          null,
      ),
    ),
  }));
  return S;
}

/** Verdicts for the targets of issue 8, from the medians. */
export function targets(m, S, importMs) {
  const out = [];
  const med = (k) => S[k]?.median ?? null;
  const v = (ok) => (ok === null ? "n/a" : ok ? "**met**" : "**not met**");
  const over = med("overheadUs");
  const overEx = med("overheadExclUs");
  const smallBytes = (med("xBytes") ?? 0) / Math.max(1, med("xPasses") ?? 1) < 64 * 1024; // small activations: transfer is negligible
  out.push({
    target: "capture overhead ≤ 25 µs per recorded op (excluding the bytes' transfer)",
    figure: smallBytes
      ? `${fmt(over)} µs/op (bytes negligible: ${fmt((med("xBytes") ?? 0) / 1024 / (med("xPasses") ?? 1))} KiB per pass)` +
        (med("aloneUs") === null
          ? ""
          : `; the agent alone, no CLI beside it: ${fmt(med("aloneUs"))} µs/op (in process, warm: ${fmt(med("warmWireUs"))} µs/op writing frames, ${fmt(med("warmDropUs"))} dropping them)`)
      : `${fmt(over)} µs/op raw; ${fmt(overEx)} µs/op after taking off the numpy-write time of the same bytes`,
    // with large activations the per-op figure is dominated by moving the bytes (see the stream targets)
    verdict: smallBytes
      ? v(over === null ? null : over <= 25)
      : `n/a: transfer-bound (${overEx !== null && overEx <= 25 ? "met" : "not met"} even after the estimate)`,
  });
  if (m.streamTarget) {
    const mbps = med("mbpsTransfer");
    out.push({
      target: "bytes stream agent → CLI → npz at ≥ 1 GB/s",
      figure: `${fmt(mbps)} MB/s for the time the bytes add to the forward pass (captured forward − plain forward); ${fmt(med("mbpsForward"))} MB/s over the whole captured forward (its compute included), ${fmt(med("mbpsWall"))} MB/s over the whole command`,
      verdict: v(mbps === null ? null : mbps >= 1000),
    });
    const ratio = med("wallRatio");
    out.push({
      target: "extract wall ≤ 1.3 × (plain forward process + numpy writing the same bytes)",
      figure: `${fmt(ratio)} × (${fmt(med("xWall") / 1000)} s against ${fmt(med("pnWall") / 1000)} s + ${fmt(med("npWrite") / 1000)} s)`,
      verdict: v(ratio === null ? null : ratio <= 1.3),
    });
  }
  const memG = med("memOverGrad");
  const memN = med("memOverNograd");
  out.push({
    target: "peak memory (CLI + agent) ≤ plain forward's peak + 400 MB",
    figure: `${fmt(med("xPeakSum") / MB)} MB: ${memN >= 0 ? "+" : ""}${fmt(memN / MB)} MB over the plain forward under no_grad (as the agent runs it), ${memG >= 0 ? "+" : ""}${fmt(memG / MB)} MB over it with autograd on`,
    verdict: v(memN === null ? null : memN <= 400 * MB),
  });
  const first = med("firstOpFromStartMs");
  out.push({
    target: "start-up to the first op ≤ import torch + 0.3 s",
    figure: `${fmt(first / 1000)} s from CLI start (Node start-up, ${fmt(med("boot") / 1000)} s alone, overlaps the agent's start) against \`python3 -c 'import torch'\` ${fmt(importMs / 1000)} s + 0.3 s; the plain process builds the model and input in ${fmt(med("pgBuild") / 1000)} s`,
    verdict:
      v(first === null || importMs === null ? null : first <= importMs + 300) +
      (first !== null && importMs !== null && first > importMs + 300 && med("pgBuild") !== null
        ? first <= importMs + med("pgBuild") + 300
          ? " (met when the model's own build time is allowed for)"
          : " (not met even allowing for the model's own build time)"
        : ""),
  });
  return out;
}

export function stdoutTable(models, summaries) {
  const head = [
    "model",
    "runs",
    "extract s",
    "fwd s",
    "peak MB",
    "plain ng s",
    "plain ng fwd s",
    "plain peak MB g/ng",
    "hooks s",
    "hooks peak MB",
    "np write s",
    "µs/op",
    "MB/s fwd",
    "1st op s",
    "others' cores",
  ];
  const rows = models.map((m) => {
    const S = summaries[m.name];
    if (!S) return [m.name, "skipped", ...head.slice(2).map(() => "")];
    const med = (k, scale = 1) => fmt(S[k].median === null ? null : S[k].median * scale);
    return [
      m.name,
      String(S.xWall.n),
      med("xWall", 1e-3),
      med("xForward", 1e-3),
      med("xPeakSum", 1 / MB),
      med("pnWall", 1e-3),
      med("pnForward", 1e-3),
      `${med("pgPeak", 1 / MB)}/${med("pnPeak", 1 / MB)}`,
      med("hkWall", 1e-3),
      med("hkPeak", 1 / MB),
      med("npWrite", 1e-3),
      med("overheadUs"),
      med("mbpsForward"),
      med("firstOpFromStartMs", 1e-3),
      fmt(S.busy.median, 2),
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (r) =>
    r
      .map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i])))
      .join("  ");
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

const QUIET_BUDGET_S = 120;

const width = (s) => [...s].length;

/** Pad every markdown table's columns to one width (as biome's markdown formatter writes them). */
export function alignTables(md) {
  const lines = md.split("\n");
  const out = [];
  for (let i = 0; i < lines.length; ) {
    if (!lines[i].startsWith("|")) {
      out.push(lines[i++]);
      continue;
    }
    const block = [];
    while (i < lines.length && lines[i].startsWith("|")) block.push(lines[i++]);
    const rows = block.map((l) =>
      l
        .replace(/^\|/, "")
        .replace(/\|$/, "")
        .split("|")
        .map((c) => c.trim()),
    );
    const isSep = (r) => r.every((c) => /^:?-+:?$/.test(c));
    const n = Math.max(...rows.map((r) => r.length));
    const w = Array.from({ length: n }, (_, j) =>
      Math.max(3, ...rows.filter((r) => !isSep(r)).map((r) => width(r[j] ?? ""))),
    );
    for (const r of rows) {
      const cells = w.map((cw, j) =>
        isSep(r) ? "-".repeat(cw) : (r[j] ?? "") + " ".repeat(cw - width(r[j] ?? "")),
      );
      out.push(`| ${cells.join(" | ")} |`);
    }
  }
  return out.join("\n");
}

/** bench/RESULTS.md */
export function markdown({
  machine,
  versions,
  opts,
  models,
  data,
  summaries,
  global,
  notes,
  elapsedMs,
}) {
  const L = [];
  const p = (s = "") => L.push(s);
  p("# torchlens benchmark results");
  p();
  p(
    `Written by \`npm run bench\` (${["node bench/run.mjs", ...opts.argv].join(" ")}) on ${machine.date}, in ${fmt(elapsedMs / 60000)} min.`,
  );
  p(
    `Each figure is the median of the runs shown, with (min–max) after it. All runs of a model are interleaved (extract, plain with autograd, plain under no_grad, hooks, numpy write; then again), so slow drift of the machine hits all alike; each step starts after a \`sync\`, so the dirty pages of the one before are not written back during it.`,
  );
  p();
  p("## Machine");
  p();
  p(`- CPU: ${machine.cpu}, ${machine.cores} cores${machine.avx512 ? " (AVX-512)" : ""}`);
  p(
    `- Memory: ${fmt(machine.memTotal / 2 ** 30)} GiB (${fmt(machine.memAvailable / 2 ** 30)} GiB available at start); no swap counted`,
  );
  p(
    `- The machine is shared: before each run the bench waits (up to ${QUIET_BUDGET_S} s in all) until other processes use under 0.3 cores; what others used during the measurements is in each table`,
  );
  p(
    `- Load average (1 min) at start ${fmt(machine.load[0], 2)}, at the end ${fmt(machine.loadEnd?.[0] ?? null, 2)}: other work on the machine shows up as spread between runs`,
  );
  p(
    `- Temp dir: ${machine.tmpDir} (${fmt(machine.tmpFree / 2 ** 30)} GiB free); files written there are removed after each measurement`,
  );
  p(
    `- ${machine.kernel}; Node ${machine.node}; Python ${versions.python} (${versions.executable}); torch ${versions.torch} (${versions.threads} threads); numpy ${versions.numpy}; torchvision ${versions.torchvision ?? "none"}`,
  );
  p();
  p("## How each figure is taken");
  p();
  p(
    "- **extract**: `node bin/torchlens.js extract MODEL -o TMP/run --json` (Python found the default way), whole-process wall time from spawn to exit. Memory: every 20 ms the bench walks the CLI's process tree in /proc and sums `VmRSS`; _peak_ is the largest sum. Each process's own max is its `VmHWM` at the last sample (exact for the kernel's high-water mark, up to the last 20 ms). The sum of the per-process maxima is an upper bound on the true summed peak. `forward` and `first op` come from the CLI's JSON summary (`forward_ms` is measured in the agent around the captured forward, so it includes sending the bytes; `first_op_ms` counts from the CLI process's start: Node's time origin, taken a few ms after exec).",
  );
  p(
    "- **plain**: a bare `/usr/bin/python3` process: import torch, `build_model()`, `example_input()`, one (cold) forward pass, once under `torch.no_grad()` (as the agent runs the model unless `--grad`: the plain forward every derived figure is held against) and once with autograd on, each in its own process. Peak = the process's `ru_maxrss`.",
  );
  p(
    "- **hooks**: the same process with `register_forward_hook` on every module (`named_modules()`, root included), each hook `np.save`-ing every tensor of the module's output to its own .npy in a temp dir; autograd on, as in the agent (under no_grad torch 1.13's TransformerEncoder takes its fused fast path and skips its submodules, so the hooks would see different work).",
  );
  p(
    "- **numpy write**: `np.save` of arrays with exactly the sizes the extraction saved, one after another into one file (the buffer is allocated and touched before the clock starts). On this machine the files land in the page cache: this is the memory-to-page-cache rate, which is also what the npz writer competes with.",
  );
  p(
    "- **derived**: overhead per op = (extract `forward_ms` − plain no_grad forward) / passes; for models with large activations also with the numpy-write time of the same bytes taken off (an estimate of the overhead without the transfer). Throughput = bytes / (extract `forward_ms` − plain forward), the rate for the time the bytes add to the forward pass (what the ≥ 1 GB/s target is judged on); also bytes / extract `forward_ms` (compute included) and bytes / extract wall. For the small-op models, `bench/agent_overhead.py` splits the overhead: the agent as its own process with a Python reader draining its pipe (the CLI's work, sharing the cores, taken away), and the capture in process, warm (best of 40), with frames written to /dev/null, with headers only packed, and dropped. Start-up = `first_op_ms`, from the CLI process's start; the CLI starts the agent before it loads its own modules, so Node's start-up (wall of `torchlens --version`, shown beside it) overlaps Python's `import torch`.",
  );
  p();
  p(
    "The CPU time of other processes is taken from /proc/stat less the measured tree and the bench itself; it includes kernel threads, so the kernel's writeback of the files a measurement writes (≈0.3 cores while 1 GB is written) counts there too.",
  );
  p();
  p("## Start-up references");
  p();
  p(`| measure | median (min–max) |`);
  p(`|---|---|`);
  p(
    `| \`python3 -c 'import torch'\` process wall (all runs of all models), s | ${cell(global.importWall, 1e-3)} |`,
  );
  p(`| import torch inside it, s | ${cell(global.importInner, 1e-3)} |`);
  p(
    `| \`torchlens --version\` process wall (Node start-up + CLI modules; all runs), s | ${cell(global.boot, 1e-3)} |`,
  );
  p();
  p("## Targets of issue 8 (measured on this machine)");
  p();
  for (const m of models) {
    const S = summaries[m.name];
    if (!S) continue;
    p(`**${m.name}**`);
    p();
    p("| target | figure | verdict |");
    p("|---|---|---|");
    for (const t of targets(m, S, S.impWall.median))
      p(`| ${t.target} | ${t.figure} | ${t.verdict} |`);
    p();
  }
  p("## Per model");
  for (const m of models) {
    p();
    p(`### ${m.name}`);
    p();
    p(m.description);
    const S = summaries[m.name];
    if (!S) {
      p();
      p(`Not run: ${data[m.name]?.skipped ?? "not selected"}.`);
      continue;
    }
    if (data[m.name].note) {
      p();
      p(data[m.name].note);
    }
    const errs = data[m.name].runs.flatMap((r) => r.errors ?? []);
    if (errs.length) {
      p();
      p("Failures:");
      for (const e of errs) p(`- ${e.split("\n")[0]}`);
    }
    p();
    p(`| measure | median (min–max), ${S.xWall.n} run(s) |`);
    p("|---|---|");
    const row = (name, s, scale, digits) => p(`| ${name} | ${cell(s, scale, digits)} |`);
    p(
      `| CPU used by other processes meanwhile (all measurements / extract alone), cores of ${machine.cores} | ${cell(S.busy, 1, 2)} / ${cell(S.xBusy, 1, 2)} |`,
    );
    row("**extract** wall, s", S.xWall, 1e-3);
    row("extract forward pass (agent, bytes included), s", S.xForward, 1e-3);
    row("extract first op from CLI start, s", S.firstOpFromStartMs, 1e-3);
    row("&nbsp;&nbsp;beside it: `torchlens --version` wall (Node start-up), s", S.boot, 1e-3);
    row("&nbsp;&nbsp;beside it: `python3 -c 'import torch'` wall, s", S.impWall, 1e-3);
    row(
      "extract after the forward pass (layer log, npz close, manifest, exit; est.), s",
      S.afterForwardMs,
      1e-3,
    );
    row("passes recorded", S.xPasses, 1, 0);
    row("bytes saved, MB", S.xBytes, 1 / MB);
    row("activations.npz size, MB", S.xNpz, 1 / MB);
    row("**peak RSS, CLI + agent (sum at one sample), MB**", S.xPeakSum, 1 / MB);
    for (const pr of S.procs)
      p(
        `| &nbsp;&nbsp;${pr.label}: max RSS (VmHWM), MB / CPU time (user + sys), s | ${cell(pr.hwm, 1 / MB)} / ${cell(pr.cpuMs, 1e-3)} |`,
      );
    row("&nbsp;&nbsp;sum of the per-process maxima, MB", S.xSumHwm, 1 / MB);
    row("**plain forward, autograd on**: process wall, s", S.pgWall, 1e-3);
    p(
      `| &nbsp;&nbsp;import torch / build model + input / forward, s | ${cell(S.pgImport, 1e-3)} / ${cell(S.pgBuild, 1e-3)} / ${cell(S.pgForward, 1e-3)} |`,
    );
    row("&nbsp;&nbsp;peak RSS, MB", S.pgPeak, 1 / MB);
    row("**plain forward, no_grad**: process wall, s", S.pnWall, 1e-3);
    row("&nbsp;&nbsp;forward, s", S.pnForward, 1e-3);
    row("&nbsp;&nbsp;peak RSS, MB", S.pnPeak, 1 / MB);
    row("**hooks + np.save**: process wall, s", S.hkWall, 1e-3);
    row("&nbsp;&nbsp;forward with saving, s", S.hkForward, 1e-3);
    p(`| &nbsp;&nbsp;arrays / MB saved | ${cell(S.hkArrays, 1, 0)} / ${cell(S.hkBytes, 1 / MB)} |`);
    row("&nbsp;&nbsp;peak RSS, MB", S.hkPeak, 1 / MB);
    row("**numpy write** of the extraction's bytes, s", S.npWrite, 1e-3);
    row("&nbsp;&nbsp;rate, MB/s", S.npwriteMbps);
    row("**capture overhead**, µs per recorded op (raw)", S.overheadUs);
    if (m.smallOps) {
      row(
        "&nbsp;&nbsp;agent alone, no CLI beside it (cold, one forward per process), µs/op",
        S.aloneUs,
      );
      row("&nbsp;&nbsp;in process, warm: frames written to /dev/null, µs/op", S.warmWireUs);
      row("&nbsp;&nbsp;in process, warm: headers only packed, µs/op", S.warmPackUs);
      row("&nbsp;&nbsp;in process, warm: frames dropped, µs/op", S.warmDropUs);
    }
    if (m.bigActivations)
      row(
        "&nbsp;&nbsp;less the numpy-write time of the same bytes (est.), µs/op",
        S.overheadExclUs,
      );
    row("throughput over the time the bytes add (captured − plain forward), MB/s", S.mbpsTransfer);
    row("throughput over the captured forward, MB/s", S.mbpsForward);
    row("throughput over the whole command, MB/s", S.mbpsWall);
    row("extract wall / (plain wall + numpy write)", S.wallRatio, 1, 2);
    row("peak over plain (autograd on), MB", S.memOverGrad, 1 / MB);
    row("peak over plain (no_grad), MB", S.memOverNograd, 1 / MB);
  }
  if (notes.length) {
    p();
    p("## Notes");
    p();
    for (const n of notes) p(`- ${n}`);
  }
  p();
  return alignTables(L.join("\n"));
}
