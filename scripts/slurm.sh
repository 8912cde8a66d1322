#!/usr/bin/env bash
# A throwaway one-node Slurm cluster (munged, slurmctld, slurmd) for tests.
#
#   bash scripts/slurm.sh start DIR   install if missing, configure under DIR, start, wait until the node
#                                     is idle, print the environment to use (last line: SLURM_CONF=...)
#   bash scripts/slurm.sh stop DIR    stop the daemons of DIR (the folder is left for the caller)
#
# Idempotent: `start` on a DIR whose cluster runs prints its environment again. Everything the daemons
# write (state, spool, logs, pid files, the munge key and socket) lives under DIR, so the cluster does
# not touch a system Slurm or munge. One node named after this host (`hostname -s`), as many CPUs as
# `nproc`, no accounting, no cgroups (proctrack/linuxproc, task/none): for tests, not for production.
# Exit code 2: Slurm is missing and cannot be installed (no apt-get, or not root).
set -euo pipefail
command=${1:-start}
dir=${2:?usage: slurm.sh start|stop DIR}

if [ "$command" != start ] && [ "$command" != stop ]; then
  echo "slurm.sh: unknown command '$command' (start or stop)" >&2; exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  [ "$command" = stop ] && exit 0
  if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "slurm.sh: Slurm is not installed and cannot be installed here (needs apt-get as root)" >&2
    exit 2
  fi
  echo "slurm.sh: installing Slurm and munge from Debian packages" >&2
  apt-get update -qq >&2
  # The daemons and the client only: the slurm-wlm metapackage also pulls documentation and plugins
  # that a one-node test cluster does not load.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >&2
fi

dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
conf=$dir/slurm.conf
export SLURM_CONF=$conf

# Stop one daemon by the pid file it wrote, and wait until it is gone (its pid file may outlive it).
stop_daemon() {
  local pidfile=$1 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

if [ "$command" = stop ]; then
  # Jobs first, so that no slurmstepd of ours is left behind.
  if running "$dir/slurmctld.pid"; then scancel --full --quiet --user="$(id -un)" 2>/dev/null || true; fi
  stop_daemon "$dir/slurmd.pid"
  stop_daemon "$dir/slurmctld.pid"
  stop_daemon "$dir/munged.pid"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  # slurmd starts jobs as their owner: only root can, so a cluster of one user's own is not possible.
  echo "slurm.sh: slurmd must run as root to start jobs" >&2
  exit 2
fi

node=$(hostname -s)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [ ! -f "$conf" ]; then
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  chmod 700 "$dir/munge"
  # RealMemory a little under what slurmd counts, else the node is drained as "Low RealMemory".
  memory_mb=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
  cat >"$conf" <<EOF
# A one-node cluster written by scripts/slurm.sh for tests.
ClusterName=paratrain
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# No cgroups: processes are tracked through /proc and not confined.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
fi

if [ ! -f "$dir/munge/munge.key" ]; then
  mungekey --create --keyfile="$dir/munge/munge.key" >&2 2>/dev/null \
    || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
  chmod 600 "$dir/munge/munge.key"
fi

if ! running "$dir/munged.pid"; then
  # --force: the socket's folder is ours, under a test directory that munged would otherwise reject
  # as not owned by the munge user.
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/munged.seed" >&2
fi
if ! running "$dir/slurmctld.pid"; then
  slurmctld -f "$conf" >&2 || { cat "$dir/slurmctld.log" >&2; exit 1; }
fi
if ! running "$dir/slurmd.pid"; then
  slurmd -f "$conf" >&2 || { cat "$dir/slurmd.log" >&2; exit 1; }
fi

# The node answers idle once slurmd registered with slurmctld.
state=""
for _ in $(seq 300); do
  state=$(sinfo --noheader --nodes="$node" --format=%T 2>/dev/null || true)
  case "$state" in idle*) break ;; esac
  sleep 0.2
done
case "$state" in
  idle*) ;;
  *)
    echo "slurm.sh: node $node did not become idle within 60 s (state: '${state:-no answer}')" >&2
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 2>/dev/null || true
    exit 1
    ;;
esac
echo "SLURM_CONF=$conf"
