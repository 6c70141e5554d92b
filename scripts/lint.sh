#!/usr/bin/env bash
# npm run lint: the TypeScript types, Biome over the TypeScript, pyright over the agent (with the
# Python the tests use, so it sees torch).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/find-python.sh
source scripts/find-python.sh
require_python
npx tsc --noEmit -p tsconfig.json
npx biome check src test bench
npx pyright -p python_agent --pythonpath "$PY"
