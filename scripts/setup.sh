#!/usr/bin/env bash
# Makes a checkout ready to run and test: npm packages, a Python with torch, numpy, msgpack and
# pytest (from Debian's packages when none is found and apt-get may be used), ISA-L for fast CRCs
# where Debian's libisal2 may be installed, and the build.
# With --test also what only the tests need: torchvision, torchaudio and Pillow for the real-model
# and image tests, Chromium for the test that renders a graph in a browser, and Slurm with munge
# for the dataset's scheduler tests (each from Debian's packages when missing and apt-get may be
# used; otherwise those tests say they were skipped).
# With --torch2 (--test does it too) also the torch 2 environment in .venv-torch2, for the tests
# that run again under torch 2 (step 5); where no torch 2 can be installed offline, one note
# says so and the torch 2 tests are skipped.
# Idempotent; prints only what it does, then one line naming the Python(s).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for_tests=0 torch2=0
for arg in "$@"; do
  case $arg in
    --test) for_tests=1 torch2=1 ;;
    --torch2) torch2=1 ;;
    *) echo "setup: unknown option $arg (known: --test, --torch2)" >&2; exit 2 ;;
  esac
done
# shellcheck source=scripts/find-python.sh
source scripts/find-python.sh

DEBIAN_PACKAGES=(python3-torch python3-numpy python3-msgpack python3-torchvision python3-pytest)

# Root, or sudo without a password, and apt-get: then we may install Debian packages.
can_apt() {
  command -v apt-get >/dev/null || return 1
  [[ $EUID -eq 0 ]] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }
}

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

apt_install() {
  apt_try "$@" || { echo "setup: apt-get failed" >&2; exit 1; }
}

# apt_try PACKAGE...: like apt_install, but a failure (its log on stderr) returns 1.
apt_try() {
  echo "setup: installing $* with apt-get"
  local log
  log=$(mktemp)
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 ||
    ! as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

# Debian's own interpreter (not a venv, not pyenv): the one apt's python3-* packages serve.
is_debian_python() {
  "$1" -c 'import sys; sys.exit(not (sys.prefix == sys.base_prefix == "/usr"))' 2>/dev/null
}

# 1. npm packages. npm writes node_modules/.package-lock.json on every install, so it is
#    older than package-lock.json exactly when the lock changed since.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# 2. A Python with torch, numpy and msgpack.
find_rc=0
find_python || find_rc=$?
if [[ $find_rc -eq 1 ]] && can_apt; then
  apt_install "${DEBIAN_PACKAGES[@]}"
  find_rc=0
  find_python || find_rc=$?
fi
if [[ $find_rc -ne 0 ]]; then
  python_help
  exit 1
fi

# 3. pytest, for the agent's tests.
if ! "$PY" -c 'import pytest' 2>/dev/null; then
  if is_debian_python "$PY" && can_apt; then
    apt_install python3-pytest
  else
    echo "setup: warning: pytest is missing for $PY; npm test needs it:" \
      "$PY -m pip install pytest" >&2
  fi
fi

# 3b. Intel's ISA-L, for the CRC-32 of the bytes the agent writes into activations.npz (about 5x
#     zlib's; python_agent/torchlens_agent/crc.py falls back to zlib's without it).
if ! PYTHONPATH=python_agent "$PY" -c 'import sys; from torchlens_agent import crc; sys.exit(crc.BACKEND == "zlib")' 2>/dev/null; then
  if can_apt && apt-cache show libisal2 >/dev/null 2>&1; then
    apt_try libisal2 || echo "setup: note: libisal2 did not install; CRCs use zlib's (slower)" >&2
  else
    echo "setup: note: ISA-L (Debian's libisal2, or pip's isal) is missing; CRCs use zlib's (slower)" >&2
  fi
fi

# 4. What only the tests need.
if [[ $for_tests -eq 1 ]]; then
  missing=()
  if is_debian_python "$PY"; then
    "$PY" -c 'import torchvision' 2>/dev/null || missing+=(python3-torchvision)
    "$PY" -c 'import torchaudio' 2>/dev/null || missing+=(python3-torchaudio)
    "$PY" -c 'import PIL' 2>/dev/null || missing+=(python3-pil)
  fi
  command -v chromium >/dev/null || missing+=(chromium)
  # a one-node Slurm cluster for the dataset's scheduler tests (scripts/slurm-cluster.sh)
  PATH=$PATH:/usr/sbin command -v slurmctld >/dev/null || missing+=(slurmctld slurmd slurm-client munge)
  if [[ ${#missing[@]} -gt 0 ]]; then
    if can_apt; then
      apt_install "${missing[@]}"
    else
      echo "setup: note: ${missing[*]} missing; the tests that need them will be skipped" >&2
    fi
  fi
fi

# 5. With --torch2 or --test: the torch 2 environment (scripts/setup-torch2.sh).
torch2_line=""
if [[ $torch2 -eq 1 ]]; then
  # shellcheck source=scripts/setup-torch2.sh
  source scripts/setup-torch2.sh
  setup_torch2
  if find_torch2_python; then torch2_line="; torch 2: python ${PY2#"$PWD"/} (torch $PY2_TORCH)"; fi
fi

# 6. The TypeScript build.
npm run build --silent

echo "setup: python $PY (torch $PY_TORCH)$torch2_line"
