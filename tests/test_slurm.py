"""The workflow through a real SLURM scheduler, and resuming after a kill.

A one-node cluster (slurm/local/start.sh) runs tests/data/slurm.yaml with `--profile slurm`:
every job is submitted, each asks for its stage's resources in config (read back from the
scheduler), an SFT job cancelled mid-run is retried and resumes, and the tables and
checkpoints equal those of a local run of the same config byte for byte (the local run's jobs
forked from the warm worker, the SLURM jobs each their own process: ordermerge/warm.py).
Without SLURM, a run killed hard (SIGKILL of its process group) resumes with the README's own
command. The time limit and the SLURM bench are in tests/test_slurm_limits.py.

`pytest -k slurm` runs these; without root (or apt-get) the cluster tests skip with the
reason, unless ORDERMERGE_REQUIRE_SLURM=1 (.ci/run) makes that a failure.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ordermerge import warm
from slurm_helpers import (FAST_POLL, ROOT, cluster_fixture, hold_sft, memory_mb, minutes,
                           rule_of, scheduler_jobs, snakemake_cmd, stage_resources, wait_for)
from workflow_helpers import copy_project, env_with_python, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

CONFIG = ROOT / "tests/data/slurm.yaml"
ARGS = ("--configfile", "config.yaml", "slurm.yaml")
RUN0 = Path("results/sft/tiny-llama/gsm8k/shuffle/run0")
# each rule of tests/data/slurm.yaml and its config stage; the orders run as one group job
STAGES = {"prepare_data": "data", "orders_order": "order", "tokenizer": "base", "base": "base",
          "sft": "sft", "merge": "merge", "merge_seeds": "merge", "evaluate": "evaluate",
          "evaluate_runs": "evaluate", "evaluate_seeds": "evaluate", "table1": "report",
          "cost": "report"}
# the average's merge and evaluation in one job each, selection's (one seed) too; both runs'
# evaluations in one job
JOBS = {"prepare_data": 1, "orders_order": 1, "tokenizer": 1, "base": 1, "sft": 2, "merge": 1,
        "merge_seeds": 1, "evaluate_runs": 1, "evaluate": 1, "evaluate_seeds": 1, "table1": 1,
        "cost": 1}


def project(tmp_path_factory, name: str) -> Path:
    wd = copy_project(tmp_path_factory.mktemp(name) / "project")
    shutil.copy2(CONFIG, wd / "slurm.yaml")
    return wd


def checkpoints(wd: Path) -> dict[str, bytes]:
    sft = wd / "results/sft"
    return {str(p.relative_to(sft)): p.read_bytes() for p in sorted(sft.rglob("model.safetensors"))}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The reference: the same config run without SLURM, uninterrupted."""
    wd = project(tmp_path_factory, "local")
    snakemake(wd, *ARGS)
    return wd


@pytest.fixture(scope="module")
def cluster():
    yield from cluster_fixture()


@pytest.fixture(scope="module")
def slurm_run(cluster, local_run, tmp_path_factory):
    """The config through `--profile slurm`; run 0's SFT job is cancelled with scancel once
    its first resume state is saved. Returns (workdir, snakemake's output, cancelled job)."""
    wd = project(tmp_path_factory, "slurm")
    hold = hold_sft(wd)  # the SFT jobs wait after their first resume state while it exists
    proc = subprocess.Popen(snakemake_cmd("--profile", "slurm", *ARGS, *FAST_POLL), cwd=wd,
                            env=env_with_python(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(wd / RUN0 / "resume/latest", proc)
        running = [j for j in scheduler_jobs(wd) if j["JobState"] == "RUNNING"
                   and j["Comment"] == "rule_sft_wildcards_tiny-llama_gsm8k_shuffle_0"]
        assert len(running) == 1, running
        cancelled = running[0]["JobId"]
        at_step = (wd / RUN0 / "resume/latest").read_text().strip()
        subprocess.run(["scancel", cancelled], check=True)
        # scancel only asks: the job goes on holding until SLURM has ended it. Letting it go
        # before then raced the signal (a fast machine trained to the next resume state
        # first), so the hold is lifted when the scheduler reports the job cancelled
        deadline = time.time() + 120
        while {j["JobId"]: j["JobState"] for j in scheduler_jobs(wd)}.get(cancelled) != "CANCELLED":
            assert time.time() < deadline, f"job {cancelled} not cancelled in 120 s"
            time.sleep(0.2)
        hold.unlink()
        out, _ = proc.communicate(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    assert proc.returncode == 0, out[-6000:]
    return wd, out, {"job": cancelled, "state": at_step}


def test_slurm_every_job_went_through_the_scheduler(slurm_run):
    wd, out, killed = slurm_run
    submitted = dict(re.findall(r"Job \S+ has been submitted with SLURM jobid (\d+) "
                                r"\(log: (\S+)\)\.", out))
    jobs = {j["JobId"]: j for j in scheduler_jobs(wd)}
    assert set(submitted) == set(jobs)
    counts: dict[str, int] = {}
    for j in jobs.values():
        counts[rule_of(j)] = counts.get(rule_of(j), 0) + 1
    assert counts == {**JOBS, "sft": JOBS["sft"] + 1}  # the cancelled SFT ran twice
    assert {j["JobState"] for i, j in jobs.items() if i != killed["job"]} == {"COMPLETED"}
    assert jobs[killed["job"]]["JobState"] == "CANCELLED"
    # nothing ran outside SLURM but the target rule `all`
    assert re.findall(r"^localrule (\w+):", out, re.M) == ["all"]
    for jobid, log in submitted.items():  # one log per job where the profile puts them
        assert Path(log).is_file() and Path(log).is_relative_to(wd / "results/logs/slurm")
        assert Path(jobs[jobid]["StdOut"]) == Path(log)


def test_slurm_jobs_ask_for_their_stages_resources(slurm_run):
    wd, _, _ = slurm_run
    res = stage_resources(CONFIG)
    for j in scheduler_jobs(wd):
        rule = rule_of(j)
        r = res[STAGES[rule]]
        n = 2 if rule == "orders_order" else 1  # the group's 2 orders run side by side
        assert (minutes(j["TimeLimit"]), memory_mb(j["MinMemoryNode"]), int(j["NumCPUs"])) == \
            (r["runtime"], n * r["mem_mb"], n * r["cpus"]), (rule, j)
        assert j["Partition"] == r["slurm_partition"]
        assert j.get("TresPerJob", "") == (f"gres:gpu:{r['gpus']}" if r["gpus"] else ""), rule


def test_slurm_tables_and_checkpoints_equal_a_local_run(slurm_run, local_run):
    wd, _, _ = slurm_run
    for name in ("table1.csv", "table1.md", "table1.tex"):
        assert (wd / "results/tables" / name).read_bytes() == \
            (local_run / "results/tables" / name).read_bytes(), name
    mine, theirs = checkpoints(wd), checkpoints(local_run)
    assert len(mine) == 2 * (2 + 3) and mine.keys() == theirs.keys()  # 2 epochs + 3 steps
    assert [k for k in mine if mine[k] != theirs[k]] == []
    # the same bytes from jobs forked from the warm worker (local) and from plain processes
    # (SLURM): every local job's log ends with the warm worker's line, no SLURM job's does
    local_logs = sorted((local_run / "results/logs").rglob("*.log"))
    assert len(local_logs) == sum(JOBS.values()) + 1  # the 2 orders have a log each
    assert [p for p in local_logs if warm.usage_cpu_s(p) is None] == []
    assert [p for p in (wd / "results/logs").rglob("*.log") if warm.usage_cpu_s(p) is not None] == []


def test_slurm_cancelled_sft_job_is_retried_and_resumes(slurm_run):
    wd, out, killed = slurm_run
    run = json.loads((wd / RUN0 / "run.json").read_text())
    step = int(killed["state"].split("-")[1])
    assert run["resumed_from_steps"] == [step] and 0 < step < 24
    assert not (wd / RUN0 / "resume").exists()
    assert f"SLURM-job '{killed['job']}' failed, SLURM status is: 'CANCELLED'" in out
    other = json.loads((wd / "results/sft/tiny-llama/gsm8k/shuffle/run1/run.json").read_text())
    assert other["resumed_from_steps"] == []
    # a finished workflow submits nothing more
    assert planned_jobs(wd, "--profile", "slurm", *ARGS) == {}


def test_killed_local_run_resumes_with_the_same_command(local_run, tmp_path_factory):
    """The README's command, killed hard mid-SFT (SIGKILL of the process group, as the OOM
    killer or a power loss), then run again unchanged: it removes the dead run's lock, redoes
    the incomplete outputs, resumes the SFT run and ends with the uninterrupted run's bytes.
    (In a copy of the finished local run without run 0's samples.csv, a target: run 0's SFT
    and what reads it are due again, the data, tokenizer, base and run 1 are not.)"""
    wd = tmp_path_factory.mktemp("killed") / "project"
    shutil.copytree(local_run, wd, symlinks=True)  # copy2 keeps the mtimes
    (wd / RUN0 / "samples.csv").unlink()  # in the test's own copy
    assert set(planned_jobs(wd, *ARGS)) == {"sft", "merge", "merge_seeds", "evaluate",
                                            "evaluate_runs", "evaluate_seeds", "table1", "cost",
                                            "all"}
    hold = hold_sft(wd)  # run 0's SFT waits after its first resume state: killed mid-run
    cmd = snakemake_cmd("--cores", "2", *ARGS)
    proc = subprocess.Popen(cmd, cwd=wd, env=env_with_python(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(wd / RUN0 / "resume/latest", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    hold.unlink()
    state = (wd / RUN0 / "resume/latest").read_text().strip()
    assert list((wd / ".snakemake/locks").glob("*.lock")), "the kill left no lock to handle"
    again = subprocess.run(cmd, cwd=wd, env=env_with_python(), capture_output=True, text=True,
                           timeout=1500)
    assert again.returncode == 0, again.stderr[-5000:]
    assert "removed the lock left by a killed run" in again.stderr
    run = json.loads((wd / RUN0 / "run.json").read_text())
    assert run["resumed_from_steps"] == [int(state.split("-")[1])]
    for name in ("table1.csv", "table1.md", "table1.tex"):
        assert (wd / "results/tables" / name).read_bytes() == \
            (local_run / "results/tables" / name).read_bytes(), name
    mine, theirs = checkpoints(wd), checkpoints(local_run)
    assert mine.keys() == theirs.keys() and [k for k in mine if mine[k] != theirs[k]] == []
