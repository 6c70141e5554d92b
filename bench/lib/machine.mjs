/** What the figures were measured on: CPU, cores, memory, disk, kernel, versions. */
import fs from "node:fs";
import os from "node:os";

export function meminfo() {
  const text = fs.readFileSync("/proc/meminfo", "latin1");
  const get = (k) => {
    const m = new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(text);
    return m ? Number(m[1]) * 1024 : null;
  };
  return { total: get("MemTotal"), available: get("MemAvailable") };
}

export function freeDisk(dir) {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

export function machine(tmpDir) {
  const cpuinfo = fs.readFileSync("/proc/cpuinfo", "latin1");
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? "unknown";
  const flags = /^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.split(" ") ?? [];
  const mem = meminfo();
  return {
    cpu: model,
    avx512: flags.includes("avx512f"),
    cores: os.cpus().length,
    memTotal: mem.total,
    memAvailable: mem.available,
    tmpDir,
    tmpFree: freeDisk(tmpDir),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    date: new Date().toISOString(),
    load: os.loadavg(),
  };
}
