#!/usr/bin/env bash
# npm test: build, Jest (extra arguments go to Jest), then the agent's pytest; prints each
# runner's counts and, alone on the last line, the totals: "N passed, N failed[, N skipped]".
# Exits non-zero when anything failed, including a runner that failed without failing a test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/find-python.sh
source scripts/find-python.sh
bash scripts/setup.sh --test >&2
require_python
# Integration tests and pytest use the same Python, found once.
export TORCHLENS_PYTHON="$PY"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# With no test files at all Jest would fail with "No tests found"; a pattern that matches
# nothing still fails.
jest_args=()
if [[ -z "$(find test -name '*.test.ts' -print -quit 2>/dev/null)" ]]; then
  jest_args+=(--passWithNoTests)
fi
jest_rc=0
NODE_OPTIONS="--experimental-vm-modules ${NODE_OPTIONS:-}" \
  npx jest --json --outputFile="$tmp/jest.json" "${jest_args[@]}" "$@" || jest_rc=$?

py_rc=0
bash scripts/pytest.sh --junitxml="$tmp/pytest.xml" || py_rc=$?

# Each runner's counts as "passed failed skipped"; a runner that exited non-zero without a
# failing test (a suite that did not load, a crash, a missing report) counts one failure.
jest_counts() {
  [[ -f "$tmp/jest.json" ]] || { echo "0 0 0"; return; }
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(r.numPassedTests, r.numFailedTests + r.numRuntimeErrorTestSuites,
      r.numPendingTests + r.numTodoTests);' "$tmp/jest.json" || echo "0 0 0"
}
pytest_counts() {
  [[ -f "$tmp/pytest.xml" ]] || { echo "0 0 0"; return; }
  "$PY" - "$tmp/pytest.xml" <<'PYEOF' || echo "0 0 0"
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
failed = n["failures"] + n["errors"]
print(n["tests"] - failed - n["skipped"], failed, n["skipped"])
PYEOF
}

read -r jp jf js < <(jest_counts)
read -r pp pf ps < <(pytest_counts)
if [[ $jest_rc -ne 0 && $jf -eq 0 ]]; then jf=1; echo "jest exited with code $jest_rc"; fi
if [[ $py_rc -ne 0 && $pf -eq 0 ]]; then pf=1; echo "pytest exited with code $py_rc"; fi

echo "jest:   $jp passed, $jf failed, $js skipped"
echo "pytest: $pp passed, $pf failed, $ps skipped"
passed=$((jp + pp)) failed=$((jf + pf)) skipped=$((js + ps))
summary="$passed passed, $failed failed"
[[ $skipped -gt 0 ]] && summary+=", $skipped skipped"
echo "$summary"
[[ $failed -eq 0 ]]
