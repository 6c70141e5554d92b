/**
 * What people see on stderr while a command runs: a spinner with a status line when stderr is a
 * terminal, nothing when it is not (logs and pipes get only the final summary). The agent's
 * stderr (the user's prints) passes through without being clobbered by the spinner.
 */
import ora, { type Ora } from "ora";

export class Progress {
  private spinner: Ora | null = null;
  private lastUpdate = 0;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly enabled: boolean = Boolean(process.stderr.isTTY) && !process.env.CI,
  ) {}

  start(text: string): void {
    if (!this.enabled) return;
    this.spinner = ora({ text, stream: this.stream, discardStdin: false }).start();
  }

  /** Change the status line; calls closer together than `minMs` are dropped. */
  update(text: string, minMs = 100): void {
    if (!this.spinner) return;
    const now = Date.now();
    if (now - this.lastUpdate < minMs) return;
    this.lastUpdate = now;
    this.spinner.text = text;
  }

  /** Pass through text from elsewhere (the agent's stderr) above the status line. */
  passThrough(chunk: Buffer | string): void {
    if (this.spinner?.isSpinning) {
      this.spinner.clear();
      this.stream.write(chunk);
      this.spinner.render();
    } else {
      this.stream.write(chunk);
    }
  }

  stop(): void {
    this.spinner?.stop();
    this.spinner = null;
  }
}

export function formatBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v >= 100 || u === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
}
