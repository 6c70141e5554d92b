# shellcheck shell=bash
# Sourced by the other scripts: the one place that decides which Python runs the agent and its
# tests. Same order as the CLI (docs/DESIGN "Python and torch"): $TORCHLENS_PYTHON, used as given
# and an error when it lacks torch/numpy/msgpack; else the first of python3, python,
# /usr/bin/python3 that imports all three. (This machine's first python3 may be a pyenv build
# without torch, hence the explicit /usr/bin/python3 last.)

TORCHLENS_PYTHON_CANDIDATES=(python3 python /usr/bin/python3)

# find_python: on success sets PY (a path) and PY_TORCH (torch's version) and returns 0.
# Returns 1 when no candidate works, 2 when $TORCHLENS_PYTHON is set but does not work;
# either way PY_TRIED lists what was tried and why it failed, for python_help.
find_python() {
  PY="" PY_TORCH="" PY_TRIED=()
  local cand path out
  if [[ -n "${TORCHLENS_PYTHON:-}" ]]; then
    if path=$(command -v -- "$TORCHLENS_PYTHON") && out=$(_probe_python "$path"); then
      PY=$path PY_TORCH=$out
      return 0
    fi
    PY_TRIED=("$TORCHLENS_PYTHON (from TORCHLENS_PYTHON): ${out:-not found}")
    return 2
  fi
  for cand in "${TORCHLENS_PYTHON_CANDIDATES[@]}"; do
    if ! path=$(command -v -- "$cand"); then
      PY_TRIED+=("$cand: not found")
    elif out=$(_probe_python "$path"); then
      PY=$path PY_TORCH=$out
      return 0
    else
      PY_TRIED+=("$path: $out")
    fi
  done
  return 1
}

# Prints torch's version, or the import error's last line, and fails.
_probe_python() {
  local out
  if out=$("$1" -c 'import torch, numpy, msgpack; print(torch.__version__)' 2>&1); then
    printf '%s\n' "${out##*$'\n'}"
  else
    printf '%s\n' "${out##*$'\n'}"
    return 1
  fi
}

# Explains, on stderr, what was tried and how to get a Python with torch.
python_help() {
  {
    echo "torchlens: no Python with torch, numpy and msgpack was found."
    local t
    for t in "${PY_TRIED[@]}"; do echo "  tried $t"; done
    if [[ -n "${TORCHLENS_PYTHON:-}" ]]; then
      echo "TORCHLENS_PYTHON is used as given; fix it, or unset it to search ${TORCHLENS_PYTHON_CANDIDATES[*]}."
    fi
    echo "To get one:"
    echo "  - Debian/Ubuntu: sudo apt-get install python3-torch python3-numpy python3-msgpack python3-pytest"
    echo "  - a virtual environment: python3 -m venv .venv && .venv/bin/pip install torch numpy msgpack pytest"
    echo "    then: export TORCHLENS_PYTHON=\"\$PWD/.venv/bin/python\""
  } >&2
}

# require_python: find_python, or explain and exit 1.
require_python() {
  find_python || { python_help; exit 1; }
}

# -- the torch 2 environment ------------------------------------------------------------------------
# scripts/setup.sh --torch2 (and --test) builds a virtual environment with torch 2 in .venv-torch2
# (git-ignored), so that the tests can run a second time under torch 2 while the Python above keeps
# Debian's torch 1.13. Everything about it is decided here.

TORCHLENS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH2_VENV="$TORCHLENS_ROOT/.venv-torch2"

# find_torch2_python: when .venv-torch2 has a Python with torch 2 or newer, numpy and msgpack, sets
# PY2 (its path) and PY2_TORCH (torch's version) and returns 0; else returns 1 with both empty.
find_torch2_python() {
  PY2="" PY2_TORCH=""
  local py="$TORCH2_VENV/bin/python" out
  [[ -x "$py" ]] || return 1
  out=$("$py" -c 'import torch, numpy, msgpack
if int(torch.__version__.split(".")[0]) < 2: raise SystemExit("torch " + torch.__version__)
print(torch.__version__)' 2>/dev/null) || return 1
  PY2=$py PY2_TORCH=${out##*$'\n'}
}
