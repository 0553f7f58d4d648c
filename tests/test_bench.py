"""Smoke runs of the benchmarks at toy sizes, so that none rots (timings are not asserted)."""
import json
import subprocess
import sys

import pytest

from workflow_helpers import ROOT


def test_bench_merge_runs_every_method_at_toy_size(tmp_path):
    pytest.importorskip("mergekit")
    out = tmp_path / "merge.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/merge.py"), "--tiny", "--k", "2",
                           "--repeats", "1", "--workdir", str(tmp_path / "w"), "--json", str(out),
                           "--methods", "average", "resample", "ties", "dare_ties"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())["by_k"]["2"]
    assert {"floor", "average", "resample", "ties", "dare_ties", "mergekit_linear", "mergekit_ties",
            "mergekit_dare_ties"} <= set(rep)
    assert rep["ties"]["mergekit"] == "mergekit_ties" and rep["ties"]["speedup_vs_mergekit"] > 0
    assert "x floor" in proc.stdout
