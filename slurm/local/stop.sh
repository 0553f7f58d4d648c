#!/usr/bin/env bash
# Stop what slurm/local/start.sh started: cancel every job, then stop the daemons whose PID
# files it recorded (and only those: a cluster or munged that was already running stays).
set -euo pipefail
prefix=${OM_SLURM_PREFIX:-/tmp/ordermerge-slurm}
pids=$prefix/pids
export PATH=$PATH:/usr/sbin
say() { printf '[slurm/local] %s\n' "$*" >&2; }

[ -d "$pids" ] || { say "nothing was started under $prefix"; exit 0; }
if [ -s "$pids/slurmctld.pid" ] && command -v scancel >/dev/null; then
    scancel --full --quiet "--user=$(id -un)" 2>/dev/null || true
fi
for d in slurmd slurmctld munged; do
    f=$pids/$d.pid
    [ -s "$f" ] || continue
    pid=$(<"$f")
    if [ -r "/proc/$pid/comm" ] && [ "$(<"/proc/$pid/comm")" = "$d" ]; then
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { say "$d (pid $pid) ignored SIGTERM: SIGKILL"; kill -9 "$pid"; }
        say "stopped $d (pid $pid)"
    fi
    rm -f "$f"
done
