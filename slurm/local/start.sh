#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests and for trying the slurm profile.
#
#   slurm/local/start.sh      install (if missing), configure, start, wait until the node is idle
#   slurm/local/stop.sh       cancel every job and stop exactly the daemons this script started
#
# Needs root and Debian/Ubuntu packages (munge, slurmctld, slurmd, slurm-client), which it
# installs with apt-get when they are missing. Idempotent: a second call starts nothing that
# runs, and restarts the daemons it started when the configuration it writes has changed.
# No accounting database: the profile polls job states with squeue, and finished jobs stay
# visible to squeue/scontrol for MinJobAge (an hour here), long enough for the tests to read
# back what each job asked for. The node declares `gpus` fake GPUs (GRES without devices)
# so that GPU requests can be submitted and read back on a machine without GPUs.
#
# Environment:
#   OM_SLURM_PREFIX   state, logs and the PID files of what was started (/tmp/ordermerge-slurm)
#   OM_SLURM_GPUS     fake GPUs the node declares (2)
#   OM_SLURM_WAIT     seconds to wait for the node (60)
#
# The configuration goes to /etc/slurm/slurm.conf: the job-step plugin that runs each
# Snakemake job inside its allocation clears SLURM_* variables (SLURM_CONF too), so the
# commands it calls must find the configuration at the compiled-in path.
set -euo pipefail

prefix=${OM_SLURM_PREFIX:-/tmp/ordermerge-slurm}
gpus=${OM_SLURM_GPUS:-2}
wait_s=${OM_SLURM_WAIT:-60}
conf=/etc/slurm/slurm.conf
pids=$prefix/pids

say() { printf '[slurm/local] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# running NAME: the daemon whose PID file we keep under $pids is alive (and not a zombie)
running() {
    local f=$pids/$1.pid pid
    [ -s "$f" ] || return 1
    pid=$(<"$f")
    [ -r "/proc/$pid/comm" ] && [ "$(<"/proc/$pid/comm")" = "$1" ] \
        && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}
# until SECONDS CMD...: retry CMD every 0.2 s
until_ok() {
    local end=$((SECONDS + $1)); shift
    while ! "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.2
    done
}

[ "$(id -u)" -eq 0 ] || die "needs root (it installs packages and starts daemons as root)"

need=()
for bin in munged slurmctld slurmd sbatch squeue scontrol; do
    command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] || need+=("$bin")
done
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
    say "installing munge slurmctld slurmd slurm-client (missing: ${need[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
                 munge slurmctld slurmd slurm-client >/dev/null; } \
        || die "apt-get could not install the SLURM packages"
fi
export PATH=$PATH:/usr/sbin

# never take over a real cluster's configuration or daemons
if [ -e "$conf" ] && ! head -n1 "$conf" | grep -q '^# written by ordermerge slurm/local/start.sh'; then
    die "$conf exists and was not written by this script: a SLURM installation is configured here; not touching it"
fi
for d in slurmctld slurmd; do
    if pgrep -x "$d" >/dev/null && ! running "$d"; then
        die "a $d this script did not start is running (pid $(pgrep -x "$d" | head -n1)); not touching it"
    fi
done
mkdir -p "$prefix"/{ctld,spool,log} "$pids" /etc/slurm

# slurmctld must find SlurmctldHost under the machine's short name
node=$(hostname -s)
getent hosts "$node" >/dev/null || { say "adding $node to /etc/hosts"; echo "127.0.0.1 $node" >>/etc/hosts; }

# --- munge: authentication between the commands and the daemons ------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged
    until_ok 10 test -s /run/munge/munged.pid || die "munged did not start"
    cp /run/munge/munged.pid "$pids/munged.pid"
    until_ok 10 sh -c 'munge -n | unmunge' || die "munge does not authenticate"
    say "munged started (pid $(<"$pids/munged.pid"))"
fi

# --- slurm.conf ---------------------------------------------------------------------------------
hw=$(slurmd -C | head -n1)                      # NodeName=... CPUs=... RealMemory=...
mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
topology=$(sed -e 's/^NodeName=[^ ]* *//' -e 's/ *RealMemory=[0-9]*//' -e 's/ *UpTime=.*//' <<<"$hw")
gres_node=; gres_types=
if [ "$gpus" -gt 0 ]; then gres_node="Gres=gpu:$gpus"; gres_types="GresTypes=gpu"; fi
new=$(mktemp)
cat >"$new" <<CONF
# written by ordermerge slurm/local/start.sh: a one-node test cluster
ClusterName=ordermerge-local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
$gres_types
# finished jobs stay known to squeue/scontrol for an hour (the profile polls with squeue)
MinJobAge=3600
# a job past its time limit is killed at the next check, without grace
OverTimeLimit=0
KillWait=5
ReturnToService=2
StateSaveLocation=$prefix/ctld
SlurmdSpoolDir=$prefix/spool
SlurmctldPidFile=$pids/slurmctld.pid
SlurmdPidFile=$pids/slurmd.pid
SlurmctldLogFile=$prefix/log/slurmctld.log
SlurmdLogFile=$prefix/log/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 $topology RealMemory=$((mem * 95 / 100)) $gres_node State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# fake GPUs: character devices like /dev/null, one per GPU (slurmd counts the files)
: >"$new.gres"
for ((i = 0; i < gpus; i++)); do
    [ -c "$prefix/fake-gpu$i" ] || mknod "$prefix/fake-gpu$i" c 1 3
    printf 'NodeName=%s Name=gpu File=%s\n' "$node" "$prefix/fake-gpu$i" >>"$new.gres"
done
changed=0
cmp -s "$new" "$conf" || changed=1
cmp -s "$new.gres" /etc/slurm/gres.conf || changed=1
if [ $changed = 1 ]; then
    for d in slurmd slurmctld; do
        if running $d; then say "configuration changed: stopping $d"; kill "$(<"$pids/$d.pid")"; fi
    done
    for d in slurmd slurmctld; do until_ok 20 sh -c "! kill -0 \$(cat '$pids/$d.pid' 2>/dev/null) 2>/dev/null" || true; done
    mv "$new" "$conf"; mv "$new.gres" /etc/slurm/gres.conf
    chmod 644 "$conf" /etc/slurm/gres.conf
    say "wrote $conf"
else
    rm -f "$new" "$new.gres"
fi

# --- daemons --------------------------------------------------------------------------------------
if ! running slurmctld; then
    slurmctld -f "$conf"
    until_ok 15 running slurmctld || { tail -n 20 "$prefix/log/slurmctld.log" >&2; die "slurmctld did not start"; }
    say "slurmctld started (pid $(<"$pids/slurmctld.pid"))"
fi
if ! running slurmd; then
    slurmd -f "$conf" -N "$node"
    until_ok 15 running slurmd || { tail -n 20 "$prefix/log/slurmd.log" >&2; die "slurmd did not start"; }
    say "slurmd started (pid $(<"$pids/slurmd.pid"))"
fi

# node_state: the node's state as sinfo reports it, once it is settled (or failed)
node_state() {
    local end=$((SECONDS + wait_s)) st=
    while [ $SECONDS -lt $end ]; do
        st=$(sinfo -h -N -o %T 2>/dev/null | head -n1 || true)
        case $st in idle|mixed|allocated|completing|inval*|drain*) break ;; esac
        sleep 0.5
    done
    echo "${st:-none}"
}
state=$(node_state)
case $state in drain*)   # drained by an earlier run (e.g. under another configuration)
    say "node $node is $state: resuming it"
    scontrol update "NodeName=$node" State=RESUME
    state=$(node_state) ;;
esac
case $state in
    idle|mixed|allocated|completing) say "node $node is $state" ;;
    *) tail -n 20 "$prefix/log/slurmctld.log" "$prefix/log/slurmd.log" >&2
       die "node $node is not ready after ${wait_s}s (state: '$state')" ;;
esac
