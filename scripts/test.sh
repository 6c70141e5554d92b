#!/usr/bin/env bash
# npm test: build, Jest (extra arguments go to Jest), then the agent's pytest, with the Python
# scripts/find-python.sh picks (Debian's torch 1.13 here); then, where scripts/setup.sh built the
# torch 2 environment (.venv-torch2), the agent's pytest and the Jest files that run the agent
# (TORCH2_JEST below) again under torch 2. Prints each runner's counts and, alone on the last line,
# the totals over every runner: "N passed, N failed[, N skipped]". Exits non-zero when anything
# failed, including a runner that failed without failing a test.
# TORCHLENS_TEST_TORCH2=0 leaves the torch 2 runs out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/find-python.sh
source scripts/find-python.sh
bash scripts/setup.sh --test >&2
require_python
# Integration tests and pytest use the same Python, found once.
export TORCHLENS_PYTHON="$PY"

# The Jest files run again under torch 2: those that start the agent and whose results depend on
# what torch does (about 4 of the torch 2 part's 5-6 minutes on a 2-core machine; pytest is the
# rest). Left out: graph (drawing is TypeScript; its runs are the fixtures extract already
# covers, 80 s), select and python (selection and Python discovery do not depend on torch),
# graph-browser (Chromium), and the files that never start Python (log, table, wire, npz,
# npzRead, arrayStats). zoo.test.ts skips its torchvision/torchaudio models by itself (the
# torch 2 environment has neither) and runs the tricky fixtures; torch2.test.ts runs only there;
# dataset.test.ts runs its array and stimuli() cases (its image cases need Pillow, absent there).
TORCH2_JEST=(extract validate commands reliability schema faithful zoo torch2 dataset)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# "1.13" from "1.13.0a0", "2.13" from "2.13.0+cpu".
short_version() {
  [[ $1 =~ ^([0-9]+\.[0-9]+) ]] && echo "${BASH_REMATCH[1]}" || echo "$1"
}

# Each runner's counts as "passed failed skipped"; a runner that exited non-zero without a
# failing test (a suite that did not load, a crash, a missing report) counts one failure.
jest_counts() {
  [[ -f "$1" ]] || { echo "0 0 0"; return; }
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(r.numPassedTests, r.numFailedTests + r.numRuntimeErrorTestSuites,
      r.numPendingTests + r.numTodoTests);' "$1" || echo "0 0 0"
}
pytest_counts() {
  [[ -f "$1" ]] || { echo "0 0 0"; return; }
  "$PY" - "$1" <<'PYEOF' || echo "0 0 0"
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
failed = n["failures"] + n["errors"]
print(n["tests"] - failed - n["skipped"], failed, n["skipped"])
PYEOF
}

lines=() passed=0 failed=0 skipped=0
# tally NAME KIND REPORT RC SECONDS: adds a runner's counts to the totals and its line to `lines`.
tally() {
  local name=$1 kind=$2 report=$3 rc=$4 seconds=$5 p f s
  read -r p f s < <("${kind}_counts" "$report")
  if [[ $rc -ne 0 && $f -eq 0 ]]; then f=1; echo "$name exited with code $rc"; fi
  lines+=("$(printf '%-22s %s passed, %s failed, %s skipped (%d s)' "$name:" "$p" "$f" "$s" "$seconds")")
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

# With no test files at all Jest would fail with "No tests found"; a pattern that matches
# nothing still fails.
jest_args=()
if [[ -z "$(find test -name '*.test.ts' -print -quit 2>/dev/null)" ]]; then
  jest_args+=(--passWithNoTests)
fi
torch1=$(short_version "$PY_TORCH")

start=$SECONDS rc=0
NODE_OPTIONS="--experimental-vm-modules ${NODE_OPTIONS:-}" \
  npx jest --json --outputFile="$tmp/jest.json" "${jest_args[@]}" "$@" || rc=$?
tally "jest (torch $torch1)" jest "$tmp/jest.json" "$rc" $((SECONDS - start))

start=$SECONDS rc=0
bash scripts/pytest.sh --junitxml="$tmp/pytest.xml" || rc=$?
tally "pytest (torch $torch1)" pytest "$tmp/pytest.xml" "$rc" $((SECONDS - start))

# The torch 2 runs, unless the Python above already is that torch.
torch2_note=""
if [[ ${TORCHLENS_TEST_TORCH2:-1} == 0 ]]; then
  torch2_note="torch 2: not run (TORCHLENS_TEST_TORCH2=0)"
elif ! find_torch2_python; then
  torch2_note="torch 2: not run (no .venv-torch2; scripts/setup.sh --torch2 says why)"
elif [[ $PY2 -ef $PY || $PY2_TORCH == "$PY_TORCH" ]]; then
  torch2_note="torch 2: not run again (the tests above ran under torch $PY_TORCH)"
else
  torch2=$(short_version "$PY2_TORCH")
  # Only the TORCH2_JEST files (every other file is ignored), narrowed further by any pattern or
  # filter given to npm test. The ignore option comes last: it takes every word after it.
  subset=$(IFS='|'; echo "${TORCH2_JEST[*]}")
  start=$SECONDS rc=0
  TORCHLENS_PYTHON="$PY2" NODE_OPTIONS="--experimental-vm-modules ${NODE_OPTIONS:-}" \
    npx jest --json --outputFile="$tmp/jest-torch2.json" --passWithNoTests "$@" \
    --testPathIgnorePatterns "^(?!.*/test/e2e/($subset)\\.test\\.ts\$)" || rc=$?
  tally "jest (torch $torch2)" jest "$tmp/jest-torch2.json" "$rc" $((SECONDS - start))

  if "$PY2" -c 'import pytest' 2>/dev/null; then
    start=$SECONDS rc=0
    TORCHLENS_PYTHON="$PY2" bash scripts/pytest.sh --junitxml="$tmp/pytest-torch2.xml" || rc=$?
    tally "pytest (torch $torch2)" pytest "$tmp/pytest-torch2.xml" "$rc" $((SECONDS - start))
  else
    torch2_note="torch 2: pytest not run (pytest is missing for $PY2)"
  fi
fi

printf '%s\n' "${lines[@]}"
[[ -n $torch2_note ]] && echo "$torch2_note"
summary="$passed passed, $failed failed"
[[ $skipped -gt 0 ]] && summary+=", $skipped skipped"
echo "$summary"
[[ $failed -eq 0 ]]
