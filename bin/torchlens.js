#!/usr/bin/env node
// The installed command: runs the compiled CLI (npm run build makes dist/).
// The agent (Python, whose `import torch` takes a second or more) starts first, so that it loads
// while Node loads the CLI's modules.
import { prestart } from "../dist/agent/spawn.js";

prestart(process.argv);
const { main } = await import("../dist/cli/main.js");
process.exitCode = await main();
