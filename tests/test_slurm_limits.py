"""SLURM's limits and the SLURM bench, on the local one-node cluster (slurm/local/start.sh),
apart from tests/test_slurm.py so that pytest-xdist runs them beside its workflow run (the
time-limit job spends a minute and more waiting for SLURM to kill it). The cluster is shared
between the two modules (slurm_helpers.cluster_fixture)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slurm_helpers import FAST_POLL, ROOT, cluster_fixture, scheduler_jobs, snakemake_cmd
from workflow_helpers import copy_project, env_with_python, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

ARGS = ("--configfile", "config.yaml", "slurm.yaml")
RUN0 = Path("results/sft/tiny-llama/gsm8k/shuffle/run0")


@pytest.fixture(scope="module")
def cluster():
    yield from cluster_fixture()


@pytest.fixture(scope="module")
def ready(tmp_path_factory):
    """tests/data/slurm.yaml's project with everything run 0's SFT reads made by a local
    run: data, orders, tokenizer, base model (`--omit-from sft`)."""
    wd = copy_project(tmp_path_factory.mktemp("timeout") / "project")
    (wd / "slurm.yaml").write_bytes((ROOT / "tests/data/slurm.yaml").read_bytes())
    snakemake(wd, *ARGS, "--omit-from", "sft", str(RUN0 / "run.json"))
    assert (wd / "results/orders/gsm8k/shuffle/run0.json").is_file()
    assert not (wd / RUN0).exists()
    return wd


def test_slurm_time_limit_is_reported_and_rerun_submits_only_what_is_missing(cluster, ready):
    """Run 0's SFT under a 1-minute limit, in a project whose SFT script waits 15 minutes
    before it trains: past its limit by construction, however fast the machine; killed by
    SLURM, reported with the setting to raise and the job's log; the next run plans only that
    SFT job (the data, orders, tokenizer and base model are done)."""
    wd = ready
    script = wd / "scripts/sft.py"
    script.write_text(script.read_text().replace(
        "start(args)\n", "start(args)\n__import__('time').sleep(900)\n", 1))
    assert "sleep(900)" in script.read_text()
    # no GPU: the one-node cluster's CPUs and fake GPUs stay free for test_slurm.py's run
    (wd / "slow.yaml").write_text("resources: {sft: {runtime: 1, gpus: 0}}\n")
    target = str(RUN0 / "run.json")
    args = ("--profile", "slurm", *ARGS, "slow.yaml", "--retries", "0", *FAST_POLL)
    proc = subprocess.run(snakemake_cmd(*args, target), cwd=wd, env=env_with_python(),
                          capture_output=True, text=True, timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    m = re.search(r"ordermerge: SLURM job (\d+) \(sft tiny-llama_gsm8k_shuffle_0\) exceeded its "
                  r"time limit of 1 min \(config resources\.sft\.runtime\) and was killed at "
                  r"\S+; log: (\S+)", out)
    assert m, out[-5000:]
    log = Path(m.group(2))
    assert log.parent == wd / "results/logs/slurm/rule_sft/tiny-llama_gsm8k_shuffle_0"
    assert "DUE TO TIME LIMIT" in log.read_text()
    assert [j["JobState"] for j in scheduler_jobs(wd) if j["JobId"] == m.group(1)] == ["TIMEOUT"]
    # data, order, tokenizer and base model are done: the next run submits the SFT job only
    jobs = planned_jobs(wd, target, "--profile", "slurm", *ARGS, "slow.yaml")
    assert set(jobs) == {"sft"} and len(jobs["sft"]) == 1



def test_bench_slurm_runs_at_toy_size(cluster, tmp_path):
    """bench/slurm.py end to end with 2 orders (its timings are not asserted)."""
    out = tmp_path / "slurm.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/slurm.py"), "--jobs", "2",
                           "--repeats", "1", "--out", str(out)], env=env_with_python(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["jobs"] == 2 and set(res["jobs_per_min"]) == {"ungrouped", "grouped"}
    assert all(len(v) == 1 and v[0] > 0 for v in res["wall_s"].values())
    assert "grouped / ungrouped throughput" in proc.stdout
