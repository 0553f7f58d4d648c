"""Smoke runs of the benchmarks at toy sizes, so that none rots (timings are not asserted)."""
import json
import subprocess
import sys

import pytest

from ulps import only_near_ties
from workflow_helpers import ROOT


def _run(script, *args, timeout=600):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_bench_merge_runs_every_method_at_toy_size(tmp_path):
    """Every method and its mergekit counterpart, the NaN/Inf check's cost, then the
    regression guard (--against) on the same inputs."""
    pytest.importorskip("mergekit")
    out = tmp_path / "merge.json"
    proc = _run("merge.py", "--tiny", "--k", "2", "--repeats", "1", "--workdir",
                str(tmp_path / "w"), "--json", str(out),
                "--methods", "average", "resample", "ties", "dare_ties", "model_stock", "karcher",
                "sce", "della", "--finite-check", "ties")
    rep = json.loads(out.read_text())["by_k"]["2"]
    assert "ties:unchecked" in rep and "average:unchecked" not in rep
    assert rep["ties"]["finite_check_cost"] == pytest.approx(
        rep["ties"]["wall_s"] / rep["ties:unchecked"]["wall_s"])
    # the two alternate in one child: as many timed runs of each
    assert len(rep["ties"]["runs_s"]) == len(rep["ties:unchecked"]["runs_s"]) == 1
    assert "NaN/Inf check: ties checked / unchecked = " in proc.stdout
    assert {"floor", "average", "resample", "ties", "dare_ties", "model_stock", "mergekit_linear",
            "mergekit_ties", "mergekit_dare_ties", "mergekit_model_stock", "karcher",
            "mergekit_karcher", "sce", "mergekit_sce", "della", "mergekit_della"} <= set(rep)
    assert rep["model_stock"]["peak_anon_mb"] > 0 and rep["mergekit_model_stock"]["peak_anon_mb"] > 0
    assert rep["ties"]["mergekit"] == "mergekit_ties" and rep["ties"]["speedup_vs_mergekit"] > 0
    assert "x floor" in proc.stdout
    # merge.json's input hashes, which merge_into's timings leave out
    hashes = json.loads(out.read_text())["input_hashes"]["2"]
    assert hashes["first_s"] > 0 and hashes["again_s"] > 0
    assert "merge.json's input hashes (ordermerge merge and merge(), after merge_into): " in proc.stdout
    # the regression guard on the same inputs: HEAD's ordermerge/ written out and timed
    # against this checkout, alternating; a name that is not a commit is one line
    out = tmp_path / "against.json"
    proc = _run("merge.py", "--tiny", "--k", "2", "--repeats", "2", "--workdir",
                str(tmp_path / "w"), "--json", str(out), "--methods", "average",
                "--against", "HEAD")  # one numba kernel to compile in the written-out tree
    rep = json.loads(out.read_text())
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert rep["old"] == {"rev": "HEAD", "commit": head} and rep["new"]["commit"].startswith(head[:12])
    r = rep["by_k"]["2"]["average"]
    assert len(r["old_s"]) == len(r["new_s"]) == 2 and min(r["old_s"] + r["new_s"]) > 0
    assert r["ratio"] == pytest.approx(r["new_median_s"] / r["old_median_s"])
    assert "new/old" in proc.stdout and "average" in proc.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "bench/merge.py"), "--against", "no-such-rev",
                          "--tiny", "--k", "2", "--workdir", str(tmp_path / "w")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().endswith(
        f"--against 'no-such-rev': not a commit of the repository at {ROOT}")
    # a work directory holding files the benchmark did not write is refused, not replaced
    mine = tmp_path / "foreign" / "k2" / "mine.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep")
    bad = subprocess.run([sys.executable, str(ROOT / "bench/merge.py"), "--tiny", "--k", "2",
                          "--workdir", str(tmp_path / "foreign"), "--skip-mergekit"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "holds files this benchmark did not write" in bad.stderr
    assert mine.read_text() == "keep"


def test_bench_train_runs_at_toy_size(tmp_path):
    out = tmp_path / "train.json"
    proc = _run("train.py", "--preset", "tiny", "--rows", "32", "--repeats", "1", "--json", str(out))
    res = json.loads(out.read_text())
    assert res["rows"] == 32 and res["tokens_per_s"] > 0 and res["plain_loop_tokens_per_s"] > 0
    assert res["ratio"] == pytest.approx(res["tokens_per_s"] / res["plain_loop_tokens_per_s"])
    assert "ordermerge train" in proc.stdout


def test_bench_train_compares_lora_with_full_fine_tuning_at_toy_size(tmp_path):
    out = tmp_path / "train-lora.json"
    proc = _run("train.py", "--adapter", "lora", "--preset", "tiny", "--rows", "32", "--repeats", "1",
                "--json", str(out))
    res = json.loads(out.read_text())
    assert res["adapter"]["r"] == 8 and res["memory"] == "peak_growth_mb"
    for kind in ("full", "lora"):
        assert res[kind]["tokens_per_s"] > 0 and res[kind]["peak_growth_mb"] > 0
    assert res["speed_ratio"] == pytest.approx(res["lora"]["tokens_per_s"] / res["full"]["tokens_per_s"])
    assert "LoRA/full: speed" in proc.stdout


def test_bench_train_compares_the_two_cuts_at_toy_size(tmp_path):
    out = tmp_path / "train-alpaca.json"
    proc = _run("train.py", "--shape", "alpaca", "--rows", "32", "--batch", "16", "--micro", "4",
                "--repeats", "1", "--json", str(out))
    res = json.loads(out.read_text())
    assert res["same_steps"] is True and res["micro_batch_tokens"] == 4 * 1200
    assert res["plain"]["real_tokens"] == res["tokens"]["real_tokens"]
    # the length-aware cut pads less on these lengths
    assert res["tokens"]["padding_efficiency"] > res["plain"]["padding_efficiency"]
    assert "same rows every step: True" in proc.stdout


def test_bench_generate_runs_at_toy_size(tmp_path):
    out = tmp_path / "generate.json"
    _run("generate.py", "--preset", "tiny", "--repeats", "1", "--json", str(out))
    res = json.loads(out.read_text())
    # every prompt decodes to the same text as plain batched generate, but where its greedy
    # path met a near tie (tests/ulps.py; was: every prompt the same)
    assert res["prompts"] > 0 and res["new_tokens"] > 0 and res["ratio"] > 0
    assert res["same_outputs"] == res["prompts"] - len(res["differ"]) and only_near_ties(res), res


def test_bench_merge_gpu_runs_on_the_cpu_at_toy_size(tmp_path):
    out = tmp_path / "merge_gpu.json"
    _run("merge_gpu.py", "--device", "cpu", "--k", "2", "--rows", "64", "--cols", "64",
         "--rounds", "1", "--repeats", "1", "--json", str(out))
    res = json.loads(out.read_text())
    assert res["same_bytes_as_cpu"] is True and {"average", "select", "resample"} <= set(res["methods"])


def test_bench_evaljobs_gives_one_job_of_k_models_the_records_of_k_jobs(tmp_path):
    """bench/evaljobs.py at toy size: the K-model job's records equal the one-model jobs',
    cold and warm (the script exits non-zero otherwise, or when a warm job ran cold); its
    timings are not asserted."""
    out = tmp_path / "evaljobs.json"
    proc = _run("evaljobs.py", "--k", "2", "--rows", "6", "--new-tokens", "4", "--repeats", "1",
                "--workdir", str(tmp_path / "w"), "--json", str(out))
    res = json.loads(out.read_text())
    assert res["same_records"] is True and res["k"] == 2
    assert {way: len(v) for way, v in res["wall_s"].items()} == {
        "single-cold": 1, "batched-cold": 1, "single-warm": 1, "batched-warm": 1}
    assert set(res["cold"]) == set(res["warm"]) == {"fixed_s_per_job", "work_s_per_model",
                                                     "per_model_ratio"}
    assert "fixed cost per job, cold / warm" in proc.stdout
    for way in ("batched-cold", "single-warm"):
        runs = sorted(p.name for p in (tmp_path / "w").glob(f"{way}-0-?.json"))
        assert runs == [f"{way}-0-0.json", f"{way}-0-1.json"]
    assert json.loads((tmp_path / "w/batched-warm-0-1.json").read_text())["name"] == "run1"
