"""Snakemake's lock after a killed run, and SLURM job failures explained.

A run killed hard (SIGKILL of its process group: a power loss, the OOM killer, `kill -9`)
leaves Snakemake's lock files under .snakemake/locks/, and the next run stops with a
LockException that asks for `--unlock`. The Snakefile's `onstart` records which process
holds the lock (host, PID, the PID's start time, the lock files' inodes and mtimes); the
next run on the same host removes the lock only when that process is gone, the lock
files are still exactly the ones it made, and no SLURM job of this directory is still
queued or running (a Snakemake killed on a login node leaves its jobs running). A lock
from another host, one without a record (an older version, `--nolock` games) or one taken
by a newer, live run is left alone, and Snakemake's own message applies (`snakemake
--unlock` when you are sure nothing runs).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

OWNER = Path(".snakemake") / "ordermerge" / "lock-owner.json"
LOCKS = Path(".snakemake") / "locks"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the
    PID it names one process, even after the PID is reused. None when no such process runs:
    also for a zombie (state Z or X), which has exited but not been reaped yet: a Snakemake
    killed together with its parent waits for PID 1 to reap it, which in a container may be
    late or never."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _lock_files(root: Path) -> dict[str, list[int]]:
    out = {}
    for p in sorted((root / LOCKS).glob("*.lock")):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        out[p.name] = [st.st_ino, st.st_mtime_ns]
    return out


def record_owner(root: Path = Path("."), pid: int | None = None) -> None:
    """Record this process as the holder of the lock files that now exist (Snakefile onstart)."""
    pid = pid or os.getpid()
    rec = {"host": socket.gethostname(), "pid": pid, "pid_start": _start_time(pid),
           "locks": _lock_files(root)}
    path = root / OWNER
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{pid}")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    os.replace(tmp, path)


def clear_stale_lock(root: Path = Path(".")) -> str | None:
    """Remove the lock of a run that was killed on this host; returns what was done, or None
    when there is nothing stale (no lock, a live or foreign owner, locks not the recorded ones)."""
    locks = _lock_files(root)
    if not locks:
        return None
    try:
        rec = json.loads((root / OWNER).read_text())
        host, pid, start, recorded = rec["host"], int(rec["pid"]), rec["pid_start"], rec["locks"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname() or recorded != locks:
        return None
    if start is not None and _start_time(pid) == start:
        return None  # the run that took the lock is still alive
    running = _slurm_jobs_in(root)
    if running:
        return (f"kept the lock left by a killed run (pid {pid} on {host} is gone): its SLURM "
                f"jobs {', '.join(running)} still run in this directory and write its outputs; "
                f"wait for them or scancel them, then run again")
    for name in locks:
        (root / LOCKS / name).unlink(missing_ok=True)
    (root / OWNER).unlink(missing_ok=True)
    return (f"removed the lock left by a killed run (pid {pid} on {host} is gone); "
            f"its incomplete outputs are redone and SFT runs resume from their last state")


def _slurm_jobs_in(root: Path) -> list[str]:
    """Ids of this user's queued or running SLURM jobs whose working directory is `root`
    (a killed Snakemake leaves its submitted jobs running); [] without SLURM."""
    if shutil.which("squeue") is None:
        return []
    try:
        out = subprocess.run(["squeue", "--me", "-h", "-o", "%i %Z"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    here = str(Path(root).resolve())
    return [line.split(" ", 1)[0] for line in out.stdout.splitlines()
            if out.returncode == 0 and line.split(" ", 1)[-1] == here]


# --- SLURM ---------------------------------------------------------------------------------------

_CANCELLED = re.compile(r"\*\*\* JOB (\d+) ON (\S+) CANCELLED AT (\S+)(?: DUE TO (.+?))? \*\*\*")


def slurm_failures(logdir: Path, since: float, limits: dict[str, tuple[str, int | None]] | None = None
                   ) -> list[str]:
    """One line per SLURM job log under `logdir` (written since `since`, a time.time()) that
    records the job was killed: by its time limit, memory limit or a cancellation. `limits`:
    rule -> (config stage, runtime in minutes), to name the setting to raise."""
    limits = limits or {}
    out = []
    for log in sorted(Path(logdir).rglob("*.log")):
        try:
            if log.stat().st_mtime < since:
                continue
            text = log.read_text(errors="replace")
        except OSError:
            continue
        rel = log.relative_to(logdir)
        rule = rel.parts[0].removeprefix("rule_").removeprefix("group_")
        what = f"{rule} {'/'.join(rel.parts[1:-1])}".strip()
        for m in _CANCELLED.finditer(text):
            job, _, at, why = m.groups()
            if why == "TIME LIMIT":
                stage, runtime = limits.get(rule, (None, None))
                where = (f" of {runtime} min (config resources.{stage}.runtime)" if stage
                         else "")
                out.append(f"SLURM job {job} ({what}) exceeded its time limit{where} and was "
                           f"killed at {at}; log: {log}")
            else:
                reason = f" ({why.lower()})" if why else ""
                out.append(f"SLURM job {job} ({what}) was cancelled at {at}{reason}; log: {log}")
        if re.search(r"oom-kill event|Exceeded job memory limit", text):  # slurmstepd's words
            stage, _ = limits.get(rule, (None, None))
            hint = f" (config resources.{stage}.mem_mb)" if stage else ""
            out.append(f"SLURM job of {what} ran out of its memory{hint}; log: {log}")
    return out
