#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying `deploy/slurm-array.sbatch` for real:
# munged, slurmctld and slurmd on loopback, every file (key, socket, config, state, logs) under
# one state directory, nothing in /etc changed. Needs root (slurmd starts jobs as their user) and
# Debian's packages: slurmctld slurmd slurm-client munge (`scripts/setup.sh slurm` installs them).
#
#   scripts/slurm-local.sh start STATE_DIR   # prints `export SLURM_CONF=...`; waits until the node is idle
#   scripts/slurm-local.sh stop STATE_DIR    # stops the three daemons it started
#
# Ports come from SLURM_LOCAL_PORT (slurmctld; slurmd uses the next one), default 16817.
set -euo pipefail

cmd="${1:?usage: slurm-local.sh start|stop STATE_DIR}"
state="${2:?usage: slurm-local.sh start|stop STATE_DIR}"
mkdir -p "$state"
state="$(cd "$state" && pwd)"
conf="$state/slurm.conf"
log() { printf 'slurm-local: %s\n' "$*" >&2; }

stop() {
  for pid in "$state"/slurmd.pid "$state"/slurmctld.pid "$state"/munged.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  # Give them a moment, then make sure.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    alive=0
    for pid in "$state"/slurmd.pid "$state"/slurmctld.pid "$state"/munged.pid; do
      [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "$state"/slurmd.pid "$state"/slurmctld.pid "$state"/munged.pid; do
    [ -f "$pid" ] && kill -9 "$(cat "$pid")" 2>/dev/null || true
    rm -f "$pid"
  done
}

if [ "$cmd" = stop ]; then
  stop
  exit 0
fi
[ "$cmd" = start ] || { log "unknown command $cmd (start|stop)"; exit 2; }
[ "$(id -u)" -eq 0 ] || { log "needs root: slurmd runs each job as its user"; exit 2; }
for bin in munged mungekey slurmctld slurmd sbatch sinfo; do
  command -v "$bin" >/dev/null || { log "$bin is missing: run scripts/setup.sh slurm"; exit 2; }
done

port="${SLURM_LOCAL_PORT:-16817}"
host="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"
plugins="$(dirname "$(find /usr/lib -name 'auth_munge.so' -path '*slurm*' | head -1)")"
mkdir -p "$state/ctld" "$state/d" "$state/munge"
chmod 700 "$state/munge"

# munge: its own key and socket, so a system munged (if any) is left alone.
[ -f "$state/munge/munge.key" ] || mungekey --create --keyfile="$state/munge/munge.key" --bits=1024
munged --force --socket="$state/munge/socket" --key-file="$state/munge/munge.key" \
  --pid-file="$state/munged.pid" --log-file="$state/munged.log" --seed-file="$state/munge/seed"

cat >"$conf" <<EOF
ClusterName=autosafe-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/socket
PluginDir=$plugins
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$conf"
slurmctld -i
slurmd -N "$host"

for _ in $(seq 1 60); do
  if sinfo -h -N -o '%t' 2>/dev/null | grep -qx 'idle'; then
    log "node $host idle ($cpus CPUs, ${mem_mb} MB); state in $state"
    echo "export SLURM_CONF=$conf"
    exit 0
  fi
  sleep 1
done
log "the node did not become idle in 60 s; last lines of the logs:"
tail -n 20 "$state"/slurmctld.log "$state"/slurmd.log >&2 || true
stop
exit 1
