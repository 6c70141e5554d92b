/**
 * Run a command and watch the memory of its whole process tree from /proc.
 *
 * Every `intervalMs` (default 20 ms) the `VmRSS` of every process in the tree under the spawned
 * process is read and summed. The tree is found by reading every /proc/PID/stat for its parent
 * (this kernel has no /proc/PID/task/TID/children): at every other sample during the first second
 * (when the CLI starts its Python), then every 10th. The peak of the sums is the tree's peak memory.
 * `VmHWM` (the kernel's own high-water mark) is read at each sample too, so each process's max is
 * exact up to the last sample before it exits, even when a spike fell between two samples. Each
 * process's CPU time (user + system) is likewise its last sampled value.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";

const KB = 1024;

/** Clock ticks per second for utime/stime in /proc/PID/stat (USER_HZ: 100 on Linux). */
const TICKS = 100;

/**
 * Parent pid and CPU time of every live process, from /proc/PID/stat (the fields after the `(comm)`
 * part: state, ppid, ... utime and stime are fields 14 and 15).
 */
function parentMap(cpu, minPid) {
  const children = new Map();
  for (const name of fs.readdirSync("/proc")) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    // descendants were born after the root, so (unless pids wrapped around) have larger pids:
    // skipping the rest saves most of the reads, at ~0.1 ms each on a busy machine
    if (Number(name) < minPid) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, "latin1");
    } catch {
      continue; // gone between readdir and read
    }
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ppid = Number(rest[1]);
    const pid = Number(name);
    cpu.set(pid, ((Number(rest[11]) + Number(rest[12])) * 1000) / TICKS);
    let list = children.get(ppid);
    if (!list) {
      list = [];
      children.set(ppid, list);
    }
    list.push(pid);
  }
  return children;
}

/** CPU time of one process (into `cpu`), from its /proc/PID/stat. */
function cpuOf(pid, cpu) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    cpu.set(pid, ((Number(rest[11]) + Number(rest[12])) * 1000) / TICKS);
  } catch {
    // gone
  }
}

function treeOf(root, cpu) {
  const children = parentMap(cpu, root);
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const c of children.get(out[i]) ?? []) out.push(c);
  return out;
}

/** VmRSS and VmHWM in bytes, or null for a process that is gone (or a zombie, which has neither). */
function memoryOf(pid) {
  let text;
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, "latin1");
  } catch {
    return null;
  }
  const rss = /^VmRSS:\s+(\d+) kB/m.exec(text);
  const hwm = /^VmHWM:\s+(\d+) kB/m.exec(text);
  if (!rss) return null;
  return { rss: Number(rss[1]) * KB, hwm: hwm ? Number(hwm[1]) * KB : Number(rss[1]) * KB };
}

/** Busy CPU time of the whole machine so far (all cores; idle and iowait left out), in ms. */
function machineBusyMs() {
  const f = fs
    .readFileSync("/proc/stat", "latin1")
    .split("\n", 1)[0]
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  // user nice system idle iowait irq softirq steal ...
  return ((f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] || 0)) * 1000) / TICKS;
}

function commandOf(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").filter(Boolean).join(" ");
  } catch {
    return null;
  }
}

/**
 * Spawn `cmd args` and sample its tree until it exits.
 * Returns { code, signal, wallMs, othersCores, treeCpuMs, stdout, stderr, peakSum, sumOfHwm, samples, procs: [{pid, cmd, maxRss, hwm, cpuMs, firstMs, lastMs}] }
 * with every memory figure in bytes; `wallMs` runs from just before spawn to the root's exit.
 */
export function runMonitored(
  cmd,
  args,
  { env = process.env, cwd, intervalMs = 20, timeoutMs = 0 } = {},
) {
  return new Promise((resolve, reject) => {
    const busy0 = machineBusyMs();
    const t0 = performance.now();
    const child = spawn(cmd, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    const out = [];
    const err = [];
    child.stdout.on("data", (b) => out.push(b));
    child.stderr.on("data", (b) => err.push(b));
    const procs = new Map();
    let peakSum = 0;
    let samples = 0;
    let exit = null;
    let tree = [];
    const driver0 = process.cpuUsage();
    const sample = () => {
      if (exit || child.pid === undefined) return;
      const now = performance.now() - t0;
      let sum = 0;
      const cpu = new Map();
      // Walking /proc costs milliseconds on a busy machine: do it at every other sample for the
      // first second (when the CLI starts its Python), then every 10th; in between, only the known tree.
      const full = now < 1000 ? samples % 2 === 0 : samples % 10 === 0;
      if (full) tree = treeOf(child.pid, cpu);
      else for (const pid of tree) cpuOf(pid, cpu);
      for (const pid of tree) {
        const m = memoryOf(pid);
        if (!m) continue;
        sum += m.rss;
        let p = procs.get(pid);
        if (!p) {
          p = { pid, cmd: null, maxRss: 0, hwm: 0, cpuMs: 0, firstMs: now, lastMs: now };
          procs.set(pid, p);
        }
        // re-read: a shim (pyenv's python3) execs the real interpreter under the same pid
        if (full || p.cmd === null) p.cmd = commandOf(pid) ?? p.cmd;
        p.maxRss = Math.max(p.maxRss, m.rss);
        p.hwm = Math.max(p.hwm, m.hwm);
        p.cpuMs = Math.max(p.cpuMs, cpu.get(pid) ?? 0);
        p.lastMs = now;
      }
      peakSum = Math.max(peakSum, sum);
      samples++;
    };
    const timer = setInterval(sample, intervalMs);
    const killer = timeoutMs ? setTimeout(() => child.kill("SIGKILL"), timeoutMs) : null;
    child.on("error", (e) => {
      clearInterval(timer);
      if (killer) clearTimeout(killer);
      reject(e);
    });
    setImmediate(sample);
    child.on("exit", (code, signal) => {
      const d = process.cpuUsage(driver0);
      exit = {
        code,
        signal,
        wallMs: performance.now() - t0,
        busyMs: machineBusyMs() - busy0,
        driverMs: (d.user + d.system) / 1000,
      };
      clearInterval(timer);
      if (killer) clearTimeout(killer);
    });
    child.on("close", () => {
      const list = [...procs.values()].sort((a, b) => a.firstMs - b.firstMs);
      const treeCpuMs = list.reduce((s, p) => s + p.cpuMs, 0);
      resolve({
        ...exit,
        treeCpuMs,
        // CPU the rest of the machine used meanwhile, in cores (the tree's last 20 ms are missed: a slight overcount)
        othersCores: Math.max(0, exit.busyMs - treeCpuMs - exit.driverMs) / exit.wallMs,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        peakSum,
        sumOfHwm: list.reduce((s, p) => s + p.hwm, 0),
        samples,
        procs: list,
        root: child.pid,
      });
    });
  });
}
