#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the tests (test/helpers/slurm.ts):
#
#   scripts/slurm-cluster.sh start DIR   write DIR/slurm.conf from test/slurm/slurm.conf.in, make a
#                                        munge key, start munged, slurmctld and slurmd, wait until
#                                        the node is idle, then print what `env DIR` prints
#   scripts/slurm-cluster.sh env DIR     the environment a client needs, as `export X=...` lines
#                                        (eval "$(scripts/slurm-cluster.sh env DIR)")
#   scripts/slurm-cluster.sh stop DIR    cancel the cluster's jobs, stop its daemons and wait until
#                                        they are gone; idempotent
#
# Needs root (SlurmUser=root) and Debian's slurmctld, slurmd, slurm-client and munge packages
# (Slurm 22.05); without them `start` exits 3 with one line saying what is missing. Runs without
# systemd: the daemons fork themselves, with their pid files in DIR.
#
# Everything the cluster writes is inside DIR (conf, munge key and socket, state, spool, logs, pid
# files); nothing outside it is written. Its munged has its own key and socket (AuthInfo=socket=
# in slurm.conf, read by the daemons and by sbatch, squeue, ...), and its ports are picked free at
# start, so it runs beside a system Slurm or another test cluster. DIR must be an absolute path
# of plain characters, short enough for a unix socket path (DIR/munge/munge.socket.2).
#
# Gotchas for clients: set SLURM_CONF (from `env`), and drop any other SLURM_* or SBATCH_* variable
# inherited from a real Slurm job, since sbatch reads them as options. `squeue -j` wants its value
# attached (--jobs=ID). Finished jobs stay in squeue for MinJobAge (5 minutes) with their state;
# there is no accounting, so no sacct.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEMPLATE=$ROOT/test/slurm/slurm.conf.in
# The daemons live in sbin, which a non-login PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
START_TIMEOUT_S=${SLURM_CLUSTER_START_TIMEOUT:-60}
STOP_TIMEOUT_S=15
# Set in the daemons' environment, which slurmd passes on to each slurmstepd it starts: `stop`
# finds the cluster's step daemons by it.
MARKER=TORCHLENS_SLURM_DIR

die() {
  echo "slurm-cluster: $*" >&2
  exit 1
}

usage() {
  echo "usage: scripts/slurm-cluster.sh start|stop|env DIR" >&2
  exit 2
}

pid_file() {
  case $1 in
    munged) echo "$DIR/munge/munged.pid" ;;
    *) echo "$DIR/run/$1.pid" ;;
  esac
}

# daemon_pid NAME: the pid in NAME's pid file, when that process is alive and is NAME (a stale
# file whose pid now belongs to another process does not count; a zombie is gone).
daemon_pid() {
  local file pid comm stat
  file=$(pid_file "$1")
  [[ -s $file ]] || return 1
  read -r pid <"$file" || [[ -n ${pid:-} ]] || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ $comm == "$1" ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]] || return 1
  echo "$pid"
}

# alive PID: the process exists and is not a zombie.
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# The pids of the processes whose environment holds every one of the given NAME=VALUE entries.
pids_with_env() {
  local proc pid entry
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [[ $pid != "$$" ]] || continue
    for entry in "$@"; do
      grep -qzxF -- "$entry" "$proc/environ" 2>/dev/null || continue 2
    done
    alive "$pid" && echo "$pid"
  done
  return 0
}

# wait_gone SECONDS PID...: 0 once none of the processes is alive, 1 when time runs out.
wait_gone() {
  local deadline=$((SECONDS + $1)) pid left
  shift
  while :; do
    left=0
    for pid in "$@"; do alive "$pid" && left=1; done
    [[ $left -eq 0 ]] && return 0
    [[ $SECONDS -lt $deadline ]] || return 1
    sleep 0.1
  done
}

# kill_and_wait PID...: SIGTERM, up to STOP_TIMEOUT_S seconds, then SIGKILL.
kill_and_wait() {
  [[ $# -gt 0 ]] || return 0
  kill -TERM "$@" 2>/dev/null || true
  wait_gone "$STOP_TIMEOUT_S" "$@" && return 0
  echo "slurm-cluster: $* did not stop on SIGTERM within ${STOP_TIMEOUT_S}s; killing" >&2
  kill -KILL "$@" 2>/dev/null || true
  wait_gone 5 "$@" || echo "slurm-cluster: warning: $* still alive after SIGKILL" >&2
}

check_dir() {
  [[ $DIR == /* ]] || die "DIR must be an absolute path, not '$DIR'"
  [[ $DIR =~ ^[A-Za-z0-9._/+-]+$ ]] ||
    die "DIR '$DIR' has characters slurm.conf cannot hold; use letters, digits and ._+-/ only"
  # sun_path holds 108 bytes with its terminating NUL.
  local socket=$DIR/munge/munge.socket.2
  [[ ${#socket} -le 107 ]] ||
    die "DIR is too long for munge's unix socket ($socket is ${#socket} bytes, at most 107); use a shorter DIR, e.g. under /tmp"
}

cmd_env() {
  printf 'export SLURM_CONF=%s\n' "$DIR/slurm.conf"
}

# Prints the last lines of each daemon's log, for a start that failed.
show_logs() {
  local log
  for log in "$DIR/munge/munged.log" "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" \
    "$DIR/log/munged.out" "$DIR/log/slurmctld.out" "$DIR/log/slurmd.out"; do
    [[ -s $log ]] || continue
    echo "---- ${log#"$DIR"/} (last 30 lines) ----" >&2
    tail -n 30 "$log" >&2
  done
}

# A pair of ports nobody listens on (slurmctld, slurmd). The start is random so that clusters
# started at the same moment (parallel test workers) are unlikely to race for the same pair.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
free_ports() {
  local try port
  for try in $(seq 1 50); do
    port=$((16817 + 2 * (RANDOM % 500)))
    port_in_use "$port" || port_in_use $((port + 1)) || {
      echo "$port $((port + 1))"
      return 0
    }
  done
  die "found no free pair of ports in 16817-17817 after 50 tries"
}

cmd_start() {
  local missing=() bin
  for bin in munged slurmctld slurmd sbatch sinfo; do
    command -v "$bin" >/dev/null || missing+=("$bin")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "slurm-cluster: ${missing[*]} not found; install Debian's slurmctld slurmd slurm-client munge (apt-get install --no-install-recommends slurmctld slurmd slurm-client munge)" >&2
    exit 3
  fi
  if [[ $EUID -ne 0 ]]; then
    echo "slurm-cluster: the test cluster runs its daemons as root (SlurmUser=root); run as root" >&2
    exit 3
  fi
  [[ -r $TEMPLATE ]] || die "the template $TEMPLATE is missing"
  mkdir -p "$DIR"
  local name
  for name in munged slurmctld slurmd; do
    if daemon_pid "$name" >/dev/null; then
      die "a cluster is already running in $DIR ($name); stop it first: scripts/slurm-cluster.sh stop $DIR"
    fi
  done

  # A fresh cluster each time: the folders it owns are emptied, nothing else in DIR is touched.
  rm -rf "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run" "$DIR/tmp"
  mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run" "$DIR/tmp"
  # munged wants every folder above its socket searchable by all (clients of any user reach it)
  # and none writable by others; mktemp -d makes DIR 0700.
  chmod a+x "$DIR"
  chmod 0755 "$DIR/munge"
  : >"$DIR/plugstack.conf"

  local host cpus memory ctld_port slurmd_port hw
  host=$(hostname -s)
  [[ -n $host ]] || die "hostname -s printed nothing; set a hostname"
  hw=$(slurmd -C 2>/dev/null | head -n 1) || hw=""
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  [[ -n $cpus ]] || cpus=$(nproc)
  [[ -n $memory ]] || memory=1024
  read -r ctld_port slurmd_port < <(free_ports)
  sed -e "s|@HOSTNAME@|$host|g" -e "s|@DIR@|$DIR|g" -e "s|@CPUS@|$cpus|g" \
    -e "s|@MEMORY_MB@|$memory|g" -e "s|@CTLD_PORT@|$ctld_port|g" \
    -e "s|@SLURMD_PORT@|$slurmd_port|g" "$TEMPLATE" >"$DIR/slurm.conf"
  local unfilled
  unfilled=$(grep -v '^#' "$DIR/slurm.conf" | grep -o '@[A-Z_]*@' | head -n 1) || true
  [[ -z $unfilled ]] || die "$TEMPLATE has a placeholder this script does not fill: $unfilled"

  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null
  else
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  fi
  chmod 0400 "$DIR/munge/munge.key"

  # A start that fails part-way (fail below, or any command that fails under set -e) shows the
  # daemons' logs and stops what it started.
  trap 'on_start_exit $?' EXIT

  local -a envs=("$MARKER=$DIR" "SLURM_CONF=$DIR/slurm.conf")
  env "${envs[@]}" munged --socket="$DIR/munge/munge.socket.2" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" </dev/null >"$DIR/log/munged.out" 2>&1 ||
    fail "munged did not start"
  env "${envs[@]}" slurmctld -f "$DIR/slurm.conf" </dev/null >"$DIR/log/slurmctld.out" 2>&1 ||
    fail "slurmctld did not start"
  env "${envs[@]}" slurmd -f "$DIR/slurm.conf" -N "$host" </dev/null >"$DIR/log/slurmd.out" 2>&1 ||
    fail "slurmd did not start"

  local deadline=$((SECONDS + START_TIMEOUT_S)) state=""
  while :; do
    state=$(SLURM_CONF=$DIR/slurm.conf sinfo -h -N -n "$host" -o %T 2>/dev/null | head -n 1) || state=""
    [[ $state == idle ]] && break
    for name in munged slurmctld slurmd; do
      # The pid file may lag a moment behind the fork.
      [[ -s $(pid_file "$name") ]] || continue
      daemon_pid "$name" >/dev/null || fail "$name exited during start"
    done
    [[ $SECONDS -lt $deadline ]] ||
      fail "node $host not idle after ${START_TIMEOUT_S}s (sinfo says: ${state:-nothing})"
    sleep 0.2
  done
  trap - EXIT
  cmd_env
}

fail() {
  echo "slurm-cluster: start failed: $1" >&2
  exit 1
}

on_start_exit() {
  [[ $1 -ne 0 ]] || return 0
  show_logs
  cmd_stop >/dev/null 2>&1 || true
  echo "slurm-cluster: start failed; the cluster is stopped (logs above, in $DIR/log and $DIR/munge)" >&2
}

cmd_stop() {
  [[ -d $DIR ]] || return 0
  local pid pids=()
  # First the jobs, while slurmctld can still cancel them; killing slurmd alone would leave the
  # step daemons and the job's processes running.
  if daemon_pid slurmctld >/dev/null && [[ -f $DIR/slurm.conf ]]; then
    local jobs
    jobs=$(SLURM_CONF=$DIR/slurm.conf squeue -h -o %F -t PD,R,CG,CF,S,RS,SO 2>/dev/null | sort -u) || jobs=""
    if [[ -n $jobs ]]; then
      # shellcheck disable=SC2086 # one job id per word
      SLURM_CONF=$DIR/slurm.conf scancel $jobs 2>/dev/null || true
      local deadline=$((SECONDS + STOP_TIMEOUT_S))
      while [[ -n $(SLURM_CONF=$DIR/slurm.conf squeue -h -o %i -t PD,R,CG,CF,S,RS,SO 2>/dev/null) ]] &&
        [[ $SECONDS -lt $deadline ]]; do
        sleep 0.2
      done
    fi
  fi
  for name in slurmd slurmctld; do
    pid=$(daemon_pid "$name") && pids+=("$pid")
  done
  kill_and_wait "${pids[@]}"
  # Step daemons left behind (slurmctld was already gone, or a job did not end), then the
  # processes of the jobs they ran (slurmstepd gives each the cluster's SLURM_CONF and a job id).
  mapfile -t pids < <(pids_with_env "$MARKER=$DIR")
  kill_and_wait "${pids[@]}"
  mapfile -t pids < <(pids_with_env "SLURM_CONF=$DIR/slurm.conf" "SLURM_CLUSTER_NAME=torchlens-test" |
    while read -r pid; do grep -qz '^SLURM_JOB_ID=' "/proc/$pid/environ" 2>/dev/null && echo "$pid"; done)
  kill_and_wait "${pids[@]}"
  pids=()
  pid=$(daemon_pid munged) && pids+=("$pid")
  kill_and_wait "${pids[@]}"
  # The pid files go, so that a later stop cannot mistake a reused pid for a daemon.
  rm -f "$DIR/run/slurmctld.pid" "$DIR/run/slurmd.pid" "$DIR/munge/munged.pid"
}

[[ $# -eq 2 ]] || usage
DIR=$2
check_dir
case $1 in
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  *) usage ;;
esac
