/**
 * The tool's version: package.json's `version`, read once at startup, so that `torchlens
 * --version`, the manifest's `version` and the published package can never disagree. (The agent
 * reports its own version, `torchlens_agent.__version__`, in its hello.)
 */
import { readFileSync } from "node:fs";

// src/version.ts and dist/version.js both sit one folder below package.json
const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
  version: string;
};

export const TOOL_VERSION: string = pkg.version;
