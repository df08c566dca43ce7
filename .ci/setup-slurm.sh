#!/usr/bin/env bash
# Start a single-node Slurm cluster (slurmctld + slurmd on this host) for bobkit's Slurm tests.
#
# Debian 12's slurm-wlm and munge; runs as root with no stdin; safe to run again (it restarts the
# daemons when the written configuration changed, and otherwise leaves a working cluster alone).
# Four fake GPUs (gres "gpu", links to /dev/null) let jobs request --gpus and receive
# CUDA_VISIBLE_DEVICES / SLURM_JOB_GPUS from Slurm exactly as on a GPU node.
#
# Environment: BOBKIT_SLURM_CPUS (default: max(nproc, 8)), BOBKIT_SLURM_MEM_MB (default 16000).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
log() { echo "[setup-slurm] $*"; }

need_install=0
for bin in slurmctld slurmd sbatch munged; do
  command -v "$bin" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" = 1 ]; then
  log "installing slurm-wlm and munge"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# --- munge -------------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  log "creating the munge key"
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --force --keyfile=/etc/munge/munge.key
  else
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  rm -f /run/munge/munge.socket.2.lock
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null

# --- slurm.conf --------------------------------------------------------------------------------
host=$(hostname -s)
cpus=${BOBKIT_SLURM_CPUS:-$(( $(nproc) > 8 ? $(nproc) : 8 ))}
mem=${BOBKIT_SLURM_MEM_MB:-16000}
gpu_dir=/var/lib/bobkit-slurm/fake-gpus
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm "$gpu_dir"
# Slurm wants character devices: each fake GPU is a link to /dev/null.
for i in 0 1 2 3; do ln -sfn /dev/null "$gpu_dir/nvidia$i"; done

conf=$(cat <<EOF
# Written by bobkit's .ci/setup-slurm.sh: a one-node test cluster.
ClusterName=bobkit
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits out its old credential (default 120 s) before it may start again; slurmd
# refuses an earlier start ("Job credential revoked") and the job fails. 10 s keeps the test short.
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# No cgroups in a container sandbox: track processes by parentage, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
# The node may declare more CPUs than this machine has: tests run many tiny CPU tasks.
SlurmdParameters=config_overrides
MaxArraySize=10001
MaxJobCount=100000
MinJobAge=600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=${host} Default=NO MaxTime=INFINITE State=UP
EOF
)
gres="NodeName=${host} Name=gpu File=${gpu_dir}/nvidia[0-3]"

changed=0
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null || true)" != "$conf" ]; then
  printf '%s\n' "$conf" > /etc/slurm/slurm.conf; changed=1
fi
if [ "$(cat /etc/slurm/gres.conf 2>/dev/null || true)" != "$gres" ]; then
  printf '%s\n' "$gres" > /etc/slurm/gres.conf; changed=1
fi

stop_daemon() {  # pidfile
  local pid
  pid=$(cat "$1" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1"
}
running() { local pid; pid=$(cat "$1" 2>/dev/null || true); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

if [ "$changed" = 1 ]; then
  log "configuration written; (re)starting the daemons"
  stop_daemon /run/slurmd.pid
  stop_daemon /run/slurmctld.pid
fi
if ! running /run/slurmctld.pid; then
  log "starting slurmctld (a clean state: no jobs left over from an earlier session)"
  /usr/sbin/slurmctld -c -i
fi
if ! running /run/slurmd.pid; then
  log "starting slurmd"
  /usr/sbin/slurmd
fi

for _ in $(seq 100); do
  scontrol ping 2>/dev/null | grep -q "UP" && break
  sleep 0.2
done
scontrol ping | grep -q UP || { log "slurmctld does not answer; see /var/log/slurm/slurmctld.log"; exit 1; }

# Wait until the node takes jobs (it registers a few seconds after slurmd starts).
for _ in $(seq 150); do
  state=$(sinfo -h -n "$host" -o %t 2>/dev/null | head -n1 || true)
  case "$state" in idle|mix|alloc) break ;; down*|drain*|inval*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;; esac
  sleep 0.2
done
state=$(sinfo -h -n "$host" -o %t | head -n1)
case "$state" in
  idle|mix|alloc) log "ready: node $host is $state ($cpus CPUs, ${mem} MB, 4 fake GPUs)" ;;
  *) log "node $host is '$state'; see /var/log/slurm/slurmd.log"; exit 1 ;;
esac
