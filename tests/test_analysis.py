"""Per-sample scoring, validation curves, Figures 1, 3 and 4 and the cost table, on small
inputs whose answers are known."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ordermerge.report import cost, figures, stats
from ordermerge.scoring import read_losses, write_losses

from test_sft import PARAMS, ROOT, env, script_cmd, setup, single  # noqa: F401 (fixtures)
from ulps import forward_error


def _samples(n=40, seed=0, slope=-0.02):
    rng = np.random.default_rng(seed)
    pos = rng.permutation(n)
    loss = 2.0 + slope * pos + rng.normal(0, 0.1, n)
    ids = [f"t:{i:03d}" for i in range(n)]
    return pd.DataFrame({"position": pos, "final_loss": loss}, index=pd.Index(ids, name="id"))


def test_figure1_rho_per_model_and_its_data(tmp_path):
    s0, s1 = _samples(seed=0), _samples(seed=1, slope=0.0)
    merged = {"avg": dict(zip(s0.index, 1.0 + 0.01 * s0["position"]))}  # rises with run0's position
    data, rho, fig = figures.figure1({"run0": s0, "run1": s1}, merged, "run0", panels=2, bins=4)
    r = rho.set_index(["model", "positions_of"])
    assert r.loc[("run0", "run0"), "rho"] == pytest.approx(stats.spearman(s0["position"], s0["final_loss"]).rho)
    assert r.loc[("run0", "run0"), "rho"] < -0.8  # the planted imbalance: later, lower
    assert r.loc[("avg", "run0"), "rho"] == pytest.approx(1.0)
    assert r.loc[("run1", "run0"), "kind"] == "sft" and ("run1", "run1") in r.index
    assert len(data) == 3 * 40 and set(data["model"]) == {"run0", "run1", "avg"}
    paths = figures.save(fig, data, tmp_path / "fig1")
    assert [p.suffix for p in paths] == [".png", ".svg", ".csv"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in paths[1].read_bytes()
    back = pd.read_csv(paths[2])
    assert back.loc[back.model == "avg", "loss"].to_numpy() == pytest.approx(
        [merged["avg"][i] for i in back.loc[back.model == "avg", "id"]], abs=1e-6)
    # the same data draws the same bytes
    _, _, fig2 = figures.figure1({"run0": s0, "run1": s1}, merged, "run0", panels=2, bins=4)
    again = figures.save(fig2, data, tmp_path / "fig1b")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]
    with pytest.raises(ValueError, match="no loss for 1 training samples"):
        figures.figure1({"run0": s0}, {"avg": dict(list(merged["avg"].items())[1:])}, "run0")


def test_figure3_segment_means_by_hand():
    pos = pd.Series([0, 1, 2, 3, 4, 5], index=list("abcdef"))
    losses = {"run0": dict(zip("abcdef", [6, 5, 4, 3, 2, 1.0])),
              "run1": dict(zip("abcdef", [1, 1, 1, 1, 1, 1.0])),
              "avg": dict(zip("fedcba", [0, 0, 0, 3, 3, 3.0]))}
    data, _ = figures.figure3(pos, losses, "run0", {"run1": "sft", "avg": "merged"}, segments=3)
    got = data.set_index(["model", "segment"])["mean_loss"]
    assert [got[("run0", s)] for s in (1, 2, 3)] == [5.5, 3.5, 1.5]
    assert [got[("avg", s)] for s in (1, 2, 3)] == [3.0, 1.5, 0.0]  # a, b: 3; c: 3, d: 0; e, f: 0
    assert set(data.loc[data.model == "run0", "kind"]) == {"anchor"}
    assert list(data.loc[data.model == "run0", "first_position"]) == [0, 2, 4]


def test_figure4_band_and_merged_curves():
    single = pd.DataFrame({"step": [1, 1, 2, 2], "checkpoint": ["s", "s", "e", "e"],
                           "model": ["run0", "run1"] * 2, "validation_loss": [3.0, 2.0, 1.0, 2.0]})
    avg = pd.DataFrame({"step": [1, 2], "checkpoint": ["s", "e"], "model": "avg",
                        "validation_loss": [2.2, 1.1]})
    data, fig = figures.figure4(single, {"avg": avg})
    assert len(data) == 6
    line = fig.axes[0].lines[0]
    assert list(line.get_ydata()) == [2.5, 1.5]
    with pytest.raises(ValueError, match="steps"):
        figures.figure4(single, {"avg": avg.iloc[:1]})


def _bench(path: Path, s: float, cpu: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tcpu_time\n" f"{s}\t0:00:01\t100\t{cpu}\n")


def test_cost_table_sums_the_benchmarks(tmp_path):
    b = tmp_path / "benchmarks"
    _bench(b / "sft/m/gsm8k/shuffle/run0.tsv", 3600, 3000)
    _bench(b / "sft/m/gsm8k/fix-batch/run0.tsv", 1800, 1000)
    _bench(b / "evaluate/m/gsm8k/shuffle/epoch1/sft/run0.tsv", 360, 300)
    _bench(b / "score/m/gsm8k/shuffle/epoch1/sft/run0/train.tsv", 36, 30)
    _bench(b / "base/m.tsv", 720, 700)
    _bench(b / "multitask/g/avg.tsv", 36, 30)  # a multi-task merge and its evaluation
    _bench(b / "evaluate/multitask/g/gsm8k/avg.tsv", 72, 60)
    runs = tmp_path / "sft"
    for run, real, processed in (("shuffle/run0", 900, 1000), ("fix-batch/run0", 300, 600)):
        (runs / "m/gsm8k" / run).mkdir(parents=True)
        (runs / "m/gsm8k" / run / "run.json").write_text(json.dumps(
            {"real_tokens": real, "processed_tokens": processed}))
    jobs = cost.read_benchmarks(b, runs)
    from ordermerge.workflow.stages import BENCHMARK_STAGES
    t = cost.cost_table(jobs, {"default": {"cpus": 1, "gpus": 0}, "sft": {"cpus": 4, "gpus": 1},
                               "evaluate": {"cpus": 2}, "merge": {"cpus": 3}}, BENCHMARK_STAGES)
    assert t.loc["purpose: Table 3", "jobs"] == 2
    assert t.loc["purpose: Table 3", "cpu_h_alloc"] == pytest.approx((36 * 3 + 72 * 2) / 3600)
    assert t.loc["rule: sft", "jobs"] == 2 and t.loc["rule: sft", "wall_h"] == pytest.approx(1.5)
    assert t.loc["rule: sft", "cpu_h_alloc"] == pytest.approx(6.0)
    assert t.loc["rule: sft", "gpu_h"] == pytest.approx(1.5)
    assert t.loc["rule: sft", "cpu_h_measured"] == pytest.approx(4000 / 3600)
    assert t.loc["purpose: Table 4", "wall_h"] == pytest.approx(0.5)
    assert t.loc["purpose: Table 1", "wall_h"] == pytest.approx(1.1)
    assert t.loc["purpose: Figures 1, 3, 4", "cpu_h_alloc"] == pytest.approx(0.02)
    assert t.loc["total", "jobs"] == 7 and t.loc["total", "gpu_h"] == pytest.approx(1.5)
    assert t.loc["rule: sft", "padding_efficiency"] == pytest.approx(1200 / 1600)
    assert t.loc["purpose: Table 4", "padding_efficiency"] == pytest.approx(0.5)
    assert t.loc["total", "real_tokens"] == 1200
    md = cost.to_markdown(t)
    assert "| rule: sft | 2 | 2700.0 | 1.5000 | 6.0000 | 1.1111 | 1.5000 | 0.750 |" in md
    assert "| rule: base | 1 | 720.0 | 0.2000 | 0.2000 | 0.1944 | 0.0000 |  |" in md  # no SFT job
    # the median job of each row: a job's fixed cost shows there
    assert t.loc["rule: evaluate", "median_job_s"] == pytest.approx((360 + 72) / 2)
    assert t.loc["total", "median_job_s"] == pytest.approx(360)
    (runs / "m/gsm8k/shuffle/run0/run.json").write_text("{}")
    with pytest.raises(ValueError, match=r"shuffle/run0/run.json: no real_tokens"):
        cost.read_benchmarks(b, runs)
    (b / "bad.tsv").write_text("x\ty\n1\t2\n")
    with pytest.raises(ValueError, match="bad.tsv"):
        cost.read_benchmarks(b)


def test_scoring_a_checkpoint_is_the_loss_of_each_row_in_memory(setup, single, tmp_path):  # noqa: F811
    """score.py on the run's last checkpoint: each training row's loss, as the same code
    (objectives.sample_losses, SFT's validation pass) gives in memory; below the loss
    the run saw on the row in its first epoch for most rows (training lowered it)."""
    import torch

    from ordermerge.data.registry import get_task
    from ordermerge.models import load_model
    from ordermerge.objectives import objective_for
    from ordermerge.objectives import sample_losses
    root, base, data, *_ = setup
    out = tmp_path / "train.csv"
    subprocess.run([sys.executable, str(ROOT / "scripts/score.py"), "--task", "gsm8k",
                    "--model", str(single / "epoch3"), "--rows", str(data / "train.jsonl"),
                    "--out", str(out), "--params", json.dumps({"max_length": 96, "batch_size": 5})],
                   check=True, env=env(), capture_output=True)
    scored = read_losses(out)
    with open(single / "samples.csv") as fh:
        seen = {r["id"]: float(r["loss_seen"]) for r in csv.DictReader(fh) if r["epoch"] == "1"}
    assert set(scored) == set(seen) and len(scored) == 60
    assert np.mean([scored[i] < seen[i] for i in seen]) > 0.8
    model, tok = load_model(single / "epoch3", dtype=torch.float32)
    model.eval()
    obj = objective_for(get_task("gsm8k"), tok, 96)
    from ordermerge.utils import read_jsonl
    ex = {r["id"]: obj.encode(r) for r in read_jsonl(data / "train.jsonl")}
    mem = sample_losses(model, obj, ex, list(ex), 5)
    assert {i: round(v, 6) for i, v in mem.items()} == scored
    # batching is padding only: the padded and the unpadded pass reduce in other orders, so a
    # token's loss (a logsumexp minus a logit) is within 2 forward_error of the largest logit
    # of exact on each side (tests/ulps.py; was: rel 1e-4)
    first = list(ex)[:7]
    one = sample_losses(model, obj, ex, first, 1)
    with torch.no_grad():
        top = max(float(model(torch.tensor([ex[i]["input_ids"]])).logits.abs().max()) for i in first)
    tol = 4 * forward_error(model.config.to_dict(), 96) * top
    assert all(abs(one[i] - mem[i]) <= tol for i in one), (tol, one, mem)
    write_losses(tmp_path / "x.csv", {"a": 1.0})
    (tmp_path / "bad.csv").write_text("id,score\na,1\n")
    with pytest.raises(ValueError, match="bad.csv"):
        read_losses(tmp_path / "bad.csv")


def test_curve_of_a_merge_of_identical_runs_is_the_runs_curve(setup, single, tmp_path):  # noqa: F811
    """The average of K copies of one run is that run at every saved step."""
    root, base, data, *_ = setup
    params = json.dumps({"max_length": 96, "batch_size": 4})
    # a second copy of the run (hard links): the same sub-model named twice is refused
    copy = tmp_path / "copy"
    shutil.copytree(single, copy, copy_function=os.link)
    outs = {}
    for name, extra in (("single", []), ("avg", ["--method-id", "avg"])):
        outs[name] = tmp_path / f"{name}.csv"
        subprocess.run([sys.executable, str(ROOT / "scripts/curve.py"), "--task", "gsm8k",
                        "--rows", str(data / "validation.jsonl"), "--out", str(outs[name]),
                        *extra, "--params", params, str(single), str(copy)],
                       check=True, env=env(), capture_output=True)
    one, avg = pd.read_csv(outs["single"]), pd.read_csv(outs["avg"])
    # save_steps [4] and the three epoch ends (8 steps an epoch)
    assert list(avg["step"]) == [4, 8, 16, 24]
    assert list(avg["checkpoint"]) == ["steps/step4", "epoch1", "epoch2", "epoch3"]
    assert list(one["model"]) == ["run0", "run1"] * 4
    assert list(avg["validation_loss"]) == list(one["validation_loss"][::2])
    run = json.loads((single / "run.json").read_text())
    hist = {h["step"]: h["validation_loss"] for h in run["history"]}
    # the epoch-end validation losses of training (fp32 weights) up to bf16 rounding
    for step, v in zip(avg["step"], avg["validation_loss"]):
        if step in (8, 16, 24):
            assert v == pytest.approx(hist[step], rel=0.05)


def test_figure1_controls_and_the_runs_order_effect(tmp_path):
    """The rho table's order-effect rows are the means over runs of rho against the run's own
    positions and against every other run's; a control is in the table against its own
    positions, and its line says whether its training log is the anchor's bytes."""
    from scipy.stats import spearmanr
    s = {f"run{r}": _samples(seed=r) for r in range(3)}
    ctl = {"control-repeat": s["run0"].copy(), "control-reseed": s["run0"].assign(
        final_loss=s["run0"]["final_loss"] + np.linspace(0, 0.01, 40))}
    data, rho, _ = figures.figure1(s, {}, "run0", panels=3, bins=4, controls=ctl)
    eff = rho[rho.kind.str.startswith("order effect")].set_index("kind")
    own = np.mean([spearmanr(s[r]["position"], s[r]["final_loss"]).statistic for r in s])
    cross = np.mean([spearmanr(s[a]["position"], s[r]["final_loss"].reindex(s[a].index)).statistic
                     for r in s for a in s if a != r])
    assert eff.loc["order effect: own", "rho"] == pytest.approx(own, abs=1e-12)
    assert eff.loc["order effect: cross", "rho"] == pytest.approx(cross, abs=1e-12)
    d = eff.loc["order effect: own - cross"]
    assert d.rho == pytest.approx(own - cross, abs=1e-12) and d.low <= d.rho <= d.high
    assert d.high < 0 and d.p < 0.05  # the planted slope is each run's own order's
    c = rho[rho.kind == "control"].set_index("model")
    assert c.loc["control-repeat", "rho"] == pytest.approx(
        rho.set_index(["model", "positions_of"]).loc[("run0", "run0"), "rho"])
    assert set(data["model"]) == {"run0", "run1", "run2", "control-repeat", "control-reseed"}
    # the control's line: its samples.csv against the anchor's, bytes first
    a = tmp_path / "a.csv"
    a.write_text("id,epoch,position,step,loss_seen\nt:000,1,0,0,1.5\nt:001,1,1,0,1.25\n"
                 "t:000,2,1,1,1.0\nt:001,2,0,1,0.75\n")
    b = tmp_path / "b.csv"
    b.write_bytes(a.read_bytes())
    line = figures.control_line("control-repeat", str(b), str(a), ctl["control-repeat"], s["run0"], "run0")
    assert "is the same bytes as run0's" in line and "40 of 40 rows equal" in line
    b.write_text(a.read_text().replace("t:000,2,1,1,1.0", "t:000,2,1,1,1.01"))
    line = figures.control_line("control-reseed", str(b), str(a), ctl["control-reseed"], s["run0"], "run0")
    assert "differs from run0's from epoch 2, optimizer step 2, on" in line and "1 of 40 rows equal" in line
