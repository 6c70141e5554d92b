/**
 * The run directory: written under a temporary sibling name and renamed into place only when
 * complete, so an interrupted run never looks complete and an existing run is never clobbered
 * (with --force it is replaced only once the new one is whole).
 */
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { usageError } from "../errors.js";
import { fsError, writeJson } from "./files.js";
import { isRun } from "./manifest.js";

async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}

export class RunDir {
  private committed = false;

  private constructor(
    readonly target: string,
    readonly tmp: string,
    private readonly replace: boolean,
  ) {}

  /** Check the target and make the temporary directory beside it (same file system, so rename works). */
  static async create(target: string, force: boolean): Promise<RunDir> {
    const abs = path.resolve(target);
    let replace = false;
    if (await exists(abs)) {
      const entries = await fs.readdir(abs).catch(() => null);
      if (entries === null)
        throw usageError(
          `${target} exists and is not a directory`,
          "choose another output path with -o",
        );
      if (entries.length > 0) {
        if (!force)
          throw usageError(
            `the run directory ${target} already exists`,
            "pass --force to replace it once the new run is complete, or choose another -o",
          );
        if (!(await isRun(abs)))
          throw usageError(
            `${target} is a non-empty directory that is not a torchlens run; --force only replaces runs`,
            "choose another output path with -o",
          );
      }
      replace = true;
    }
    const parent = path.dirname(abs);
    try {
      await fs.mkdir(parent, { recursive: true });
    } catch (err) {
      throw fsError(err, `creating ${parent}`);
    }
    const tmp = path.join(
      parent,
      `.${path.basename(abs)}.partial-${process.pid}-${randomBytes(3).toString("hex")}`,
    );
    try {
      await fs.mkdir(tmp);
    } catch (err) {
      throw fsError(err, `creating the run directory in ${parent}`);
    }
    return new RunDir(abs, tmp, replace);
  }

  file(name: string): string {
    return path.join(this.tmp, name);
  }

  async writeJson(name: string, value: unknown): Promise<void> {
    await writeJson(this.file(name), name, value);
  }

  /** Move the finished run into place; an old run at the target is removed only after that. */
  async commit(): Promise<void> {
    let aside: string | null = null;
    try {
      if (this.replace && (await exists(this.target))) {
        aside = `${this.tmp}-old`;
        await fs.rename(this.target, aside);
      }
      await fs.rename(this.tmp, this.target);
      this.committed = true;
    } catch (err) {
      if (aside) await fs.rename(aside, this.target).catch(() => undefined);
      throw fsError(err, `moving the run into ${this.target}`);
    }
    if (aside) await fs.rm(aside, { recursive: true, force: true });
  }

  /** Remove the temporary directory (synchronous: safe from signal handlers and exit paths). */
  discard(): void {
    if (!this.committed) rmSync(this.tmp, { recursive: true, force: true });
  }
}
