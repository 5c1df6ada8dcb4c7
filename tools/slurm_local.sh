#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying and testing `SCHEDULER=slurm bash run_pipeline.sh`:
# installs Slurm and munge from the distribution's packages (Debian: slurm-wlm, munge), writes a
# slurm.conf describing this machine (`slurmd -C`), starts munged, slurmctld and slurmd, and waits until
# `sinfo` shows the node idle. Needs root. Idempotent: a second call finds everything running and returns.
#
#   sudo bash tools/slurm_local.sh        # then: SCHEDULER=slurm bash run_pipeline.sh quick
#
# Not for production clusters: no accounting database, no cgroups (containers often lack them), the
# daemons run as root, and a job may use any CPU of the machine (Slurm counts CPUs, it does not pin them).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "error: tools/slurm_local.sh needs root (it installs packages and starts daemons)" >&2; exit 2; }

node_idle() { sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }
if command -v sinfo >/dev/null && node_idle; then
  echo "slurm: already up ($(sinfo -h -N -o '%N %c CPUs %m MB %T'))"; exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm: installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# munge authenticates every message between the commands and the daemons: one key, read by munged only
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done

# slurm.conf: this host as controller and as the only node, with the CPUs and memory `slurmd -C` finds.
# CR_CPU counts hardware threads, so a 2-thread machine runs two 1-CPU tasks at a time.
host=$(hostname -s)
node=$(slurmd -C | head -1 | sed -e "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/" -e 's/ UpTime=.*//')
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
conf=$(cat <<EOF
# written by tools/slurm_local.sh: a one-node cluster on $host
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=60
$node State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$conf" ]; then
  echo "$conf" > /etc/slurm/slurm.conf
  pkill -x slurmctld || true; pkill -x slurmd || true; sleep 1
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 120); do
  node_idle && break
  # a node left down or drained by an earlier start comes back once the daemons agree
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 0.5
done
node_idle || { echo "error: the slurm node did not come up: see /var/log/slurm/slurmd.log and slurmctld.log" >&2; exit 1; }
echo "slurm: up ($(sinfo -h -N -o '%N %c CPUs %m MB %T'))"
