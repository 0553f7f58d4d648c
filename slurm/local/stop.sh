#!/usr/bin/env bash
# Stop what slurm/local/start.sh started: cancel every job, then stop the daemons whose PID
# files it recorded (and only those: a cluster or munged that was already running stays),
# and remove the configuration it wrote (/etc/slurm/slurm.conf with its first line, and the
# gres.conf written with it). Left behind, that configuration names a controller nobody
# runs: every `scontrol show config` then waits 9 s, and Snakemake's SLURM plugin runs one
# at import, in every Snakemake process on the machine.
set -euo pipefail
prefix=${OM_SLURM_PREFIX:-/tmp/ordermerge-slurm}
pids=$prefix/pids
export PATH=$PATH:/usr/sbin
say() { printf '[slurm/local] %s\n' "$*" >&2; }

conf=/etc/slurm/slurm.conf
forget_conf() {
    if [ -f "$conf" ] && head -n1 "$conf" | grep -q '^# written by ordermerge slurm/local/start.sh'; then
        rm -f "$conf" /etc/slurm/gres.conf
        say "removed $conf and /etc/slurm/gres.conf (written by start.sh)"
    fi
}
[ -d "$pids" ] || { say "nothing was started under $prefix"; forget_conf; exit 0; }
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
forget_conf
