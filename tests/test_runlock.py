"""The stale-lock handling after a killed run, and SLURM failure messages (no cluster needed)."""
import json
import os
import socket
import subprocess
import sys
import time

from ordermerge.workflow import runlock


def _locks(root, *names):
    d = root / ".snakemake/locks"
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_text("results/x\n")


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_of_a_dead_run_is_removed(tmp_path):
    _locks(tmp_path, "0.input.lock", "0.output.lock")
    runlock.record_owner(tmp_path, pid=os.getpid())
    rec = json.loads((tmp_path / runlock.OWNER).read_text())
    assert rec["host"] == socket.gethostname() and set(rec["locks"]) == {"0.input.lock", "0.output.lock"}
    rec["pid"] = _dead_pid()
    (tmp_path / runlock.OWNER).write_text(json.dumps(rec))
    note = runlock.clear_stale_lock(tmp_path)
    assert note and f"pid {rec['pid']}" in note
    assert list((tmp_path / ".snakemake/locks").iterdir()) == []
    assert runlock.clear_stale_lock(tmp_path) is None  # nothing left to do


def test_lock_of_a_run_that_is_a_zombie_is_removed(tmp_path):
    """A killed Snakemake not yet reaped (a zombie: /proc/PID/stat still there, state Z) is
    gone: its lock is removed."""
    _locks(tmp_path, "0.input.lock")
    # the child runs until its stdin closes: its record is taken while it runs
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        runlock.record_owner(tmp_path, pid=proc.pid)
        assert json.loads((tmp_path / runlock.OWNER).read_text())["pid_start"] is not None
        assert runlock.clear_stale_lock(tmp_path) is None  # alive: the lock stays
        proc.stdin.close()
        deadline = time.time() + 60
        while open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.time() < deadline, "the child did not exit"
            time.sleep(0.01)
        assert runlock._start_time(proc.pid) is None  # exited, not reaped: not running
        assert runlock.clear_stale_lock(tmp_path) is not None
        assert not (tmp_path / ".snakemake/locks/0.input.lock").exists()
    finally:
        proc.wait()


def test_lock_of_a_live_run_stays(tmp_path):
    _locks(tmp_path, "0.input.lock")
    runlock.record_owner(tmp_path)  # this test's own process: alive
    assert runlock.clear_stale_lock(tmp_path) is None
    assert (tmp_path / ".snakemake/locks/0.input.lock").exists()


def test_a_reused_pid_is_not_the_owner(tmp_path):
    """Same PID, another process (start time differs): the owner is gone."""
    _locks(tmp_path, "0.input.lock")
    runlock.record_owner(tmp_path)
    rec = json.loads((tmp_path / runlock.OWNER).read_text())
    rec["pid_start"] = str(int(rec["pid_start"]) - 1)
    (tmp_path / runlock.OWNER).write_text(json.dumps(rec))
    assert runlock.clear_stale_lock(tmp_path) is not None


def test_locks_taken_after_the_record_or_elsewhere_stay(tmp_path):
    _locks(tmp_path, "0.input.lock")
    runlock.record_owner(tmp_path, pid=_dead_pid())
    # a newer run replaced the lock file (the dead run's record no longer describes it)
    time.sleep(0.01)
    (tmp_path / ".snakemake/locks/0.input.lock").unlink()
    _locks(tmp_path, "0.input.lock")
    assert runlock.clear_stale_lock(tmp_path) is None
    # the record names another host: nothing can be said about its process
    runlock.record_owner(tmp_path, pid=_dead_pid())
    rec = json.loads((tmp_path / runlock.OWNER).read_text())
    rec["host"] = "elsewhere.invalid"
    (tmp_path / runlock.OWNER).write_text(json.dumps(rec))
    assert runlock.clear_stale_lock(tmp_path) is None
    # no record at all (an older version took the lock)
    (tmp_path / runlock.OWNER).unlink()
    assert runlock.clear_stale_lock(tmp_path) is None
    assert (tmp_path / ".snakemake/locks/0.input.lock").exists()


def test_slurm_failures_name_the_setting_and_the_log(tmp_path):
    logs = tmp_path / "slurm"
    sft = logs / "rule_sft/tiny-llama_gsm8k_shuffle_0/41.log"
    ev = logs / "rule_evaluate/tiny-llama_gsm8k_shuffle_2_sft_run0/42.log"
    ok = logs / "rule_merge/tiny-llama_gsm8k_shuffle_2_avg/43.log"
    old = logs / "rule_sft/tiny-llama_gsm8k_shuffle_1/7.log"
    for p in (sft, ev, ok, old):
        p.parent.mkdir(parents=True, exist_ok=True)
    sft.write_text("step 3\nslurmstepd: error: *** JOB 41 ON vm CANCELLED AT "
                   "2026-11-29T14:01:02 DUE TO TIME LIMIT ***\n")
    ev.write_text("slurmstepd: error: *** JOB 42 ON vm CANCELLED AT 2026-11-29T14:01:05 ***\n"
                  "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=42.batch.\n")
    ok.write_text("done\n")
    old.write_text("*** JOB 7 ON vm CANCELLED AT 2026-11-28T10:00:00 DUE TO TIME LIMIT ***\n")
    os.utime(old, (1, 1))  # from an earlier run: not reported
    lines = runlock.slurm_failures(logs, since=time.time() - 60,
                                   limits={"sft": ("sft", 25), "evaluate": ("evaluate", 12)})
    assert lines == [
        f"SLURM job 42 (evaluate tiny-llama_gsm8k_shuffle_2_sft_run0) was cancelled at "
        f"2026-11-29T14:01:05; log: {ev}",
        f"SLURM job of evaluate tiny-llama_gsm8k_shuffle_2_sft_run0 ran out of its memory "
        f"(config resources.evaluate.mem_mb); log: {ev}",
        f"SLURM job 41 (sft tiny-llama_gsm8k_shuffle_0) exceeded its time limit of 25 min "
        f"(config resources.sft.runtime) and was killed at 2026-11-29T14:01:02; log: {sft}",
    ]


def test_lock_stays_while_the_dead_runs_slurm_jobs_still_run(tmp_path, monkeypatch):
    """Snakemake killed on the login node leaves its SLURM jobs running: removing the lock
    would let a second run write the same outputs."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "squeue").write_text(f"#!/bin/sh\necho '77 {tmp_path.resolve()}'\necho '78 /elsewhere'\n")
    (bin_ / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    _locks(tmp_path, "0.input.lock")
    runlock.record_owner(tmp_path, pid=_dead_pid())
    note = runlock.clear_stale_lock(tmp_path)
    assert note.startswith("kept the lock") and "SLURM jobs 77 still run" in note
    assert (tmp_path / ".snakemake/locks/0.input.lock").exists()
