#!/usr/bin/env bash
# The agent's Python tests (npm run test:py): pytest over python_agent/ with the Python that
# scripts/find-python.sh picks. Extra arguments go to pytest. "No tests collected" (exit 5) is a
# failure only when test files exist.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/find-python.sh
source scripts/find-python.sh
require_python

if ! "$PY" -c 'import pytest' 2>/dev/null; then
  echo "pytest is not installed for $PY; run: bash scripts/setup.sh (Debian) or $PY -m pip install pytest" >&2
  exit 1
fi

# Tests import torchlens_agent the way the CLI runs it: from python_agent/.
export PYTHONPATH="$PWD/python_agent${PYTHONPATH:+:$PYTHONPATH}"
rc=0
"$PY" -m pytest python_agent -q "$@" || rc=$?
if [[ $rc -eq 5 ]] && [[ -z "$(find python_agent \( -name 'test_*.py' -o -name '*_test.py' \) -print -quit)" ]]; then
  echo "pytest: no Python test files under python_agent/ yet"
  rc=0
fi
exit "$rc"
