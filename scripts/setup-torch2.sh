# shellcheck shell=bash
# Sourced by scripts/setup.sh (--torch2, --test), which defines can_apt, apt_try and
# is_debian_python: setup_torch2 builds the torch 2 environment that scripts/find-python.sh's
# find_torch2_python finds, .venv-torch2 (git-ignored), for the tests that run again under torch 2.
#
# - Its base is a python3 on PATH that is not Debian's /usr/bin/python3 (whose dist-packages hold
#   torch 1.13 and numpy 1, which must not shadow the environment's) and not itself a virtual
#   environment; the environment sees the base's site-packages (--system-site-packages).
# - torch comes from a wheel pip finds offline (`pip install --no-index --no-deps torch`: the
#   wheels that PIP_FIND_LINKS or pip.conf's find-links name). Whatever version that is, it must
#   be torch 2 or newer (detected, not pinned).
# - What torch and the agent import that the base lacks (here msgpack, filelock, fsspec) is linked
#   one package at a time from Debian's dist-packages into .venv-torch2/debian (put on sys.path by
#   a .pth file), installing python3-<name> with apt-get first when it is missing and apt may be
#   used; else pip offline. Only those packages are linked, so nothing else of Debian's is seen.
#
# Idempotent: an environment that works is left alone, one that does not is built again. Where
# no torch 2 can be had, one line says why and setup goes on (the torch 2 tests are skipped).

DEBIAN_DIST_PACKAGES=${DEBIAN_DIST_PACKAGES:-/usr/lib/python3/dist-packages}

_torch2_note() {
  echo "setup: note: $*; the torch 2 tests will be skipped" >&2
}

# The last non-empty line of a file, for notes.
_last_line() {
  grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | cut -c 1-200
}

_python_version() {
  "$1" -c 'import sys; print("python %d.%d" % sys.version_info[:2])' 2>/dev/null || echo "$1"
}

# Every python3 on PATH (in PATH order, then versioned names) that can be a base: not Debian's,
# not a virtual environment, and able to make one with pip in it. Printed as the interpreter
# itself (a pyenv shim's target).
_torch2_bases() {
  local cand real key seen=" "
  while IFS= read -r cand; do
    is_debian_python "$cand" && continue
    real=$("$cand" -c 'import sys, venv, ensurepip
assert sys.prefix == sys.base_prefix
print(sys.executable)' 2>/dev/null) || continue
    [[ -n $real ]] || continue
    key=$(readlink -f -- "$real" 2>/dev/null) || key=$real
    [[ $seen != *" $key "* ]] || continue
    seen+="$key "
    printf '%s\n' "$real"
  done < <(type -ap python3 python3.14 python3.13 python3.12 python3.11 python3.10 python3.9 2>/dev/null)
}

# The modules the environment still lacks: torch's own requirements (its metadata, markers
# evaluated, extras left out), then what the agent and its tests import. One per line, as
# "module distribution".
_torch2_missing() {
  "$TORCH2_VENV/bin/python" - <<'PYEOF'
import importlib.metadata as md
import importlib.util
import re

try:
    from pip._vendor.packaging.requirements import Requirement
except ImportError:  # no pip to read markers with: take the requirements without markers
    Requirement = None

wanted = []
for text in md.requires("torch") or []:
    if Requirement is not None:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        wanted.append(req.name)
    elif ";" not in text:
        wanted.append(re.split(r"[<>=!~\[ ]", text, maxsplit=1)[0])
wanted += ["numpy", "msgpack", "pytest"]
for dist in dict.fromkeys(wanted):
    module = {"pyyaml": "yaml"}.get(dist.lower(), dist.lower().replace("-", "_"))
    if importlib.util.find_spec(module) is None:
        print(module, dist)
PYEOF
}

# Links a Debian package's module into .venv-torch2/debian; fails when Debian has none.
_torch2_link_debian() {
  local module=$1 src
  for src in "$DEBIAN_DIST_PACKAGES/$module" "$DEBIAN_DIST_PACKAGES/$module.py"; do
    if [[ -e $src ]]; then
      mkdir -p "$TORCH2_VENV/debian"
      ln -sfn "$src" "$TORCH2_VENV/debian/${src##*/}"
      return 0
    fi
  done
  return 1
}

# Tries one base: the environment, torch, what is missing. On failure sets TORCH2_WHY and returns 1.
_torch2_build() {
  local base=$1 log=$2 version module dist site entry
  local -a missing=() debs=()
  rm -rf "$TORCH2_VENV"
  if ! "$base" -m venv --system-site-packages "$TORCH2_VENV" >"$log" 2>&1; then
    TORCH2_WHY="$base cannot make a virtual environment ($(_last_line "$log"))"
    return 1
  fi
  if ! "$TORCH2_VENV/bin/python" -m pip install -q --no-index --no-deps torch >"$log" 2>&1; then
    TORCH2_WHY="no torch 2 wheel is available offline for $(_python_version "$base") (pip: $(_last_line "$log"))"
    return 1
  fi
  version=$("$TORCH2_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null) || version="?"
  if [[ ! $version =~ ^([2-9]|[1-9][0-9]+)\. ]]; then
    TORCH2_WHY="the torch wheel pip finds offline is $version, not torch 2"
    return 1
  fi
  # Debian's python3-<name> for what is missing: installed with apt-get when it may be, then linked.
  mapfile -t missing < <(_torch2_missing)
  for module in "${missing[@]%% *}"; do
    [[ $module == numpy || $module == torch ]] && continue # Debian's are built for its own torch 1 and python
    [[ -e $DEBIAN_DIST_PACKAGES/$module || -e $DEBIAN_DIST_PACKAGES/$module.py ]] && continue
    can_apt && apt-cache show "python3-${module//_/-}" >/dev/null 2>&1 && debs+=("python3-${module//_/-}")
  done
  if [[ ${#debs[@]} -gt 0 ]] && ! apt_try "${debs[@]}"; then
    TORCH2_WHY="apt-get could not install ${debs[*]}, which torch 2 needs"
    return 1
  fi
  for entry in "${missing[@]}"; do
    module=${entry%% *} dist=${entry#* }
    [[ $module != numpy && $module != torch ]] && _torch2_link_debian "$module" && continue
    "$TORCH2_VENV/bin/python" -m pip install -q --no-index "$dist" >"$log" 2>&1 && continue
    if [[ $module == pytest ]]; then
      echo "setup: note: pytest is missing for the torch 2 Python; the agent's tests will not run under torch 2" >&2
      continue
    fi
    TORCH2_WHY="torch 2 needs $dist, which neither $base, Debian's packages nor pip offline provide"
    return 1
  done
  if [[ -d $TORCH2_VENV/debian ]]; then
    site=$("$TORCH2_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    echo "$TORCH2_VENV/debian" >"$site/torchlens-debian.pth"
  fi
  if ! "$TORCH2_VENV/bin/python" -c 'import torch, numpy, msgpack' >"$log" 2>&1; then
    TORCH2_WHY="torch $version does not import in the environment ($(_last_line "$log"))"
    return 1
  fi
}

setup_torch2() {
  find_torch2_python && return 0
  local base log
  local -a bases=()
  mapfile -t bases < <(_torch2_bases)
  if [[ ${#bases[@]} -eq 0 ]]; then
    _torch2_note "no python3 on PATH besides Debian's to build a torch 2 environment from"
    return 0
  fi
  log=$(mktemp)
  TORCH2_WHY=""
  for base in "${bases[@]}"; do
    # Where the base's own pip can tell (a dry run), bases without a wheel are passed over quietly.
    if "$base" -m pip --version >/dev/null 2>&1 &&
      ! "$base" -m pip install --dry-run --ignore-installed --no-index --no-deps -q torch >"$log" 2>&1 &&
      ! grep -q 'no such option' "$log"; then
      TORCH2_WHY="no torch 2 wheel is available offline for $(_python_version "$base") (pip: $(_last_line "$log"))"
      continue
    fi
    echo "setup: building the torch 2 environment in .venv-torch2 from $base"
    if _torch2_build "$base" "$log"; then
      rm -f "$log"
      return 0
    fi
  done
  rm -f "$log"
  rm -rf "$TORCH2_VENV"
  _torch2_note "$TORCH2_WHY"
}
