/**
 * What people see on stderr while a command runs: a spinner with a status line when stderr is a
 * terminal, nothing when it is not (logs and pipes get only the final summary). The agent's
 * stderr (the user's prints) passes through without being clobbered by the spinner.
 */
import ora, { type Ora } from "ora";

// extract.ts imports these two from here; their home is format.ts.

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
