"""The whole pipeline on a reduced tiny suite, run once in a copy of the project.

Asserts on the table, the merged models, the provenance records, byte-for-byte
reproducibility, and on what `snakemake -n` plans after config and source edits.
"""
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ordermerge.utils import sha256_file
from workflow_helpers import REDUCED_ARGS, check_job_imports, plain, planned_jobs, rule_outputs, snakemake

pytestmark = pytest.mark.workflow

K, EPOCHS, SEEDS = 2, 2, 2
TASKS = ["gsm8k", "sst2"]


@pytest.fixture(scope="module")
def done(reduced_run):
    """The session's shared reduced run (tests/conftest.py)."""
    return reduced_run


def config_args(*extra):
    return (*REDUCED_ARGS, *extra)


def test_table1_rows_columns_and_ranges(done):
    table = pd.read_csv(done / "results/tables/table1.csv", index_col="row")
    assert list(table.index) == ["single", "weighted-avg", "param-selection", "resample",
                                 "Model Stock", "Fisher", "RegMean", "greedy soup", "TIES",
                                 "ensemble (not a merge)"]
    assert {"gsm8k", "gsm8k_std", "gsm8k_n", "gsm8k_lo", "gsm8k_hi", "gsm8k_p", "avg_delta",
            "test_resamples", "test_seed"} <= set(table.columns)
    for t in TASKS:  # each interval holds its mean; a p-value for every merge row
        assert (table[f"{t}_lo"] <= table[t] + 1e-6).all() and (table[t] <= table[f"{t}_hi"] + 1e-6).all()
        assert math.isnan(table.loc["single", f"{t}_p"])
        assert table[f"{t}_p"].iloc[1:].between(0, 1).all()
    assert table["gsm8k"].between(0, 100).all()
    assert table.loc["single", "gsm8k_n"] == K
    assert table.loc["weighted-avg", "gsm8k_n"] == 1
    assert table.loc["param-selection", "gsm8k_n"] == SEEDS
    assert table.loc["resample", "gsm8k_n"] == SEEDS
    assert math.isnan(table.loc["single", "avg_delta"])
    assert table.loc["TIES", "gsm8k_n"] == 1
    assert table.loc["Model Stock", "gsm8k_n"] == table.loc["Fisher", "gsm8k_n"] == 1
    assert table.loc["greedy soup", "gsm8k_n"] == table.loc["RegMean", "gsm8k_n"] == 1
    # the ensemble: one record of the K runs (evaluate_ensemble), tested like the merges
    assert table.loc["ensemble (not a merge)", "gsm8k_n"] == 1
    ens = json.loads((done / f"results/eval/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/ensemble/runs.json").read_text())
    assert ens["kind"] == "ensemble" and len(ens["model_path"]) == K
    assert table.loc["ensemble (not a merge)", "gsm8k"] == pytest.approx(100 * ens["score"], abs=1e-3)
    # RegMean read each run's Grams over 4 training rows (the input_gram rule)
    recipe = json.loads((done / f"results/merged/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/regmean-n4-a0.9/merge.json").read_text())
    assert len(recipe["input_gram"]) == K and all("/gram/" in g and g.endswith("-n4") for g in recipe["input_gram"])
    for row in ("weighted-avg", "param-selection", "resample", "Model Stock", "Fisher",
                "RegMean", "greedy soup", "TIES", "ensemble (not a merge)"):
        assert table.loc[row, "avg_delta"] == pytest.approx(
            (table.loc[row, TASKS] - table.loc["single", TASKS]).mean(), abs=1e-3)
    md = (done / "results/tables/table1.md").read_text()
    assert md.splitlines()[0] == "| | gsm8k | sst2 | Avg Δ |"
    assert md.count("\n") == 14  # header, rule, 10 rows, a blank line and the legend
    tex = (done / "results/tables/table1.tex").read_text()
    assert tex.count(r"\\") == 11 and r"\begin{tabular}{lrrr}" in tex


def test_scores_match_the_evaluation_records(done):
    ev = done / "results/eval/tiny-llama/gsm8k/shuffle" / f"epoch{EPOCHS}"
    singles = [json.loads((ev / f"sft/run{r}.json").read_text()) for r in range(K)]
    for rec in singles:
        assert rec["n"] == 24 and len(rec["examples"]) == 24
        assert rec["score"] == sum(e["correct"] for e in rec["examples"]) / 24
        assert {"id", "prompt", "output", "extracted", "gold", "correct"} <= set(rec["examples"][0])
    table = pd.read_csv(done / "results/tables/table1.csv", index_col="row")
    assert table.loc["single", "gsm8k"] == pytest.approx(
        100 * sum(r["score"] for r in singles) / K, abs=1e-3)


def test_checkpoints_are_in_the_base_dtype_and_merges_load_and_generate(done):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sft = done / "results/sft/tiny-llama/gsm8k/shuffle/run0/epoch1"
    assert json.loads((sft / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(sft / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    merged = done / f"results/merged/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/resample-n1-s0"
    model = AutoModelForCausalLM.from_pretrained(merged)
    tok = AutoTokenizer.from_pretrained(merged)
    ids = torch.tensor([[tok.bos_token_id] + tok("Question: Tom has 2 pens.",
                                                 add_special_tokens=False)["input_ids"]])
    out = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    recipe = json.loads((merged / "merge.json").read_text())
    assert recipe["method"] == "resample" and recipe["rounds"] == 1 and recipe["seed"] == 0
    assert len(recipe["sub_models"]) == K


def test_every_output_has_a_provenance_record(done):
    res = done / "results"
    outputs = [*res.glob("eval/**/*.json"), *res.glob("tables/*.csv"), *res.glob("orders/**/*.json"),
               *res.glob("data/*/*.jsonl"), *res.glob("sft/**/samples.csv"), *res.glob("sft/**/run.json"),
               res / "base/tiny-llama/corpus.txt"]
    outputs = [p for p in outputs if not p.name.endswith(".prov.json")]
    dirs = [*res.glob("sft/**/epoch*"), *res.glob("merged/**/epoch*/*"), res / "base/tiny-llama/model",
            res / "base/tiny-llama/tokenizer"]
    assert len(outputs) > 20 and len(dirs) > 10
    for p in outputs:
        rec = json.loads(p.with_name(p.name + ".prov.json").read_text())
        assert set(rec) >= {"rule", "params", "seeds", "inputs", "outputs", "code", "packages",
                            "host", "start", "end"}
        assert rec["outputs"][p.name]["sha256"] == sha256_file(p)
    for d in dirs:
        rec = json.loads((d / "provenance.json").read_text())
        for rel, h in rec["outputs"].items():
            assert sha256_file(d / rel) == h["sha256"], (d, rel)
    # the sft record hashes the order it followed
    rec = json.loads((res / "sft/tiny-llama/gsm8k/shuffle/run1/epoch1/provenance.json").read_text())
    assert rec["inputs"]["results/orders/gsm8k/shuffle/run1.json"] == \
        sha256_file(res / "orders/gsm8k/shuffle/run1.json")
    assert rec["seeds"]["run"] == 1


def test_samples_log_has_every_row_every_epoch(done):
    df = pd.read_csv(done / "results/sft/tiny-llama/gsm8k/shuffle/run0/samples.csv")
    assert len(df) == 48 * EPOCHS
    for epoch, g in df.groupby("epoch"):
        assert sorted(g["position"]) == list(range(48))
        assert g["id"].nunique() == 48
    order = json.loads((done / "results/orders/gsm8k/shuffle/run0.json").read_text())
    first = df[df.epoch == 1].sort_values("position")["id"].tolist()
    assert first == order["epochs"][0]
    assert list(df.columns) == ["id", "epoch", "position", "step", "loss_seen"]
    assert (df["loss_seen"] > 0).all()


def test_same_config_and_seeds_give_the_same_bytes(done, tmp_path):
    """Re-run one SFT run and one merge from their provenance records; compare bytes."""
    res = done / "results"
    ck = res / "sft/tiny-llama/gsm8k/shuffle/run0"
    rec = json.loads((ck / "epoch1/provenance.json").read_text())
    params = {k: v for k, v in rec["params"].items() if k != "checkpoint"}
    subprocess.run([sys.executable, "scripts/sft.py", "--task", "gsm8k",
                    "--base", "results/base/tiny-llama/model", "--data-dir", "results/data/gsm8k",
                    "--order", "results/orders/gsm8k/shuffle/run0.json",
                    "--out-dir", str(tmp_path / "sft"), "--params", json.dumps(params)],
                   cwd=done, check=True, capture_output=True)
    for e in range(1, EPOCHS + 1):
        assert sha256_file(tmp_path / f"sft/epoch{e}/model.safetensors") == \
            sha256_file(ck / f"epoch{e}/model.safetensors")
    subs = [f"results/sft/tiny-llama/gsm8k/shuffle/run{r}/epoch1" for r in range(K)]
    subprocess.run([sys.executable, "scripts/merge.py", "--method-id", "resample-n1-s1",
                    "--base", "results/base/tiny-llama/model", "--out-dir", str(tmp_path / "m"),
                    *subs], cwd=done, check=True, capture_output=True)
    assert sha256_file(tmp_path / "m/model.safetensors") == \
        sha256_file(res / "merged/tiny-llama/gsm8k/shuffle/epoch1/resample-n1-s1/model.safetensors")


def test_a_complete_run_has_nothing_left_to_do(done):
    assert planned_jobs(done, *config_args()) == {}


def test_a_moved_project_has_nothing_left_to_do(done, tmp_path):
    import shutil
    moved = tmp_path / "elsewhere"
    shutil.copytree(done, moved, symlinks=True)  # copy2 keeps the mtimes
    assert planned_jobs(moved, *config_args()) == {}


def _assert_only_resample(jobs, rounds, tasks):
    """Only the resample merges of `tasks` (GSM8K's under both order schemes: Table 4), their
    evaluations, GSM8K's resample curve and training-set score (the figures), and the
    tables and figures that show resample."""
    assert set(jobs) == {"merge_seeds", "evaluate_seeds", "score", "curve", "table1", "table1L",
                         "table4", "figure1", "figure3", "figure4", "general_eval_seeds",
                         "table5", "cost", "all"}, jobs
    # GSM8K's resample merges at the report epoch on the general benchmarks (Table 5)
    assert jobs["general_eval_seeds"] == [
        f"results/general/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/merged/resample-n{rounds}-s0/tiny_facts.json"]
    # every epoch of both tasks under shuffled orders, Table 4's report epoch under fix-batch,
    # and the LoRA runs' report epoch (Table 1L, on GSM8K)
    n_merges = len(tasks) * EPOCHS * SEEDS + SEEDS + SEEDS
    assert sum("/tiny-llama-lora/gsm8k/shuffle/" in p for p in jobs["merge_seeds"]) == 1
    # one merge job (and one evaluation job) per (task, scheme, epoch) makes both seeds
    assert len(jobs["merge_seeds"]) == n_merges // SEEDS
    assert all(p.endswith(f"/resample-n{rounds}-s0") for p in jobs["merge_seeds"])
    assert sum("/fix-batch/" in p for p in jobs["merge_seeds"]) == 1  # Table 4, report epoch
    # one evaluation job per (task, scheme, epoch) evaluates both seeds' merges
    assert len(jobs["evaluate_seeds"]) == n_merges // SEEDS
    assert all(p.endswith(f"/merged/resample-n{rounds}-s0.json") for p in jobs["evaluate_seeds"])
    assert jobs["score"] == [f"results/scores/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/merged/"
                             f"resample-n{rounds}-s0/train.csv"]
    assert jobs["curve"] == [f"results/curves/tiny-llama/gsm8k/shuffle/resample-n{rounds}-s0.csv"]


def test_changing_resample_rounds_reruns_only_resample(done):
    (done / "n2.yaml").write_text("tasks:\n  gsm8k:\n    resample_rounds: 2\n")
    _assert_only_resample(planned_jobs(done, *config_args("n2.yaml")), rounds=2, tasks=["gsm8k"])


def test_editing_the_resample_source_reruns_only_resample(done):
    src = done / "ordermerge/merge/resample.py"
    text = src.read_text()
    try:
        src.write_text(text + "\n# an edit\n")
        _assert_only_resample(planned_jobs(done, *config_args()), rounds=1, tasks=TASKS)
    finally:
        src.write_text(text)
        # the restored file is newer than the outputs: mark them current again
        snakemake(done, *config_args("--touch"))
    assert planned_jobs(done, *config_args()) == {}


def test_editing_the_ties_source_reruns_only_ties(done):
    """A task-vector method on the same registry: its Table 1 merges (both tasks, every
    epoch) and the group's TIES merge, their evaluations and the two tables; nothing else
    (dare-resample shares taskvec.py, not ties.py)."""
    src = done / "ordermerge/merge/ties.py"
    text = src.read_text()
    try:
        src.write_text(text + "\n# an edit\n")
        jobs = planned_jobs(done, *config_args())
    finally:
        src.write_text(text)
        snakemake(done, *config_args("--touch"))
    assert set(jobs) == {"merge", "multitask_merge", "evaluate", "evaluate_multitask_pair",
                         "general_eval", "table1", "table3", "table5", "cost", "all"}, jobs
    assert jobs["general_eval"] == [f"results/general/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/"
                                    f"merged/ties-d0.3-l1.0/tiny_facts.json"]
    assert len(jobs["merge"]) == len(TASKS) * EPOCHS and all("/ties-d0.3-l1.0" in p for p in jobs["merge"])
    assert jobs["multitask_merge"] == ["results/multitask/pair/ties-d0.3-l1.0"]
    assert len(jobs["evaluate"]) == len(TASKS) * EPOCHS
    # one job evaluates the group's merge on both tasks: its outputs are both tasks' records
    assert jobs["evaluate_multitask_pair"] == ["results/eval/multitask/pair/gsm8k/ties-d0.3-l1.0.json"]
    records = [plain(p) for p, _ in rule_outputs(done, "evaluate_multitask_pair", "config.yaml",
                                                 "reduced.yaml") if not p.endswith(".prov.json")]
    assert sorted(p.replace("{name}", "ties-d0.3-l1.0") for p in records) == \
        [f"results/eval/multitask/pair/{t}/ties-d0.3-l1.0.json" for t in TASKS]
    assert planned_jobs(done, *config_args()) == {}


def test_table3_single_rows_and_merges_come_from_their_records(done):
    table = pd.read_csv(done / "results/tables/table3.csv", index_col="row")
    assert list(table.index) == ["single", "weighted-avg", "TIES", "DARE-resample"]
    assert set(table["group"]) == {"pair"}
    for t in TASKS:  # single: run 0 of each task at the last epoch, on its own task
        rec = json.loads((done / f"results/eval/tiny-llama/{t}/shuffle/epoch{EPOCHS}/sft/run0.json").read_text())
        assert table.loc["single", t] == pytest.approx(100 * rec["score"], abs=1e-3)
        for row, mid in (("weighted-avg", "avg"), ("TIES", "ties-d0.3-l1.0"),
                         ("DARE-resample", "dare-resample-p0.3-n1-l1.0-s0")):
            rec = json.loads((done / f"results/eval/multitask/pair/{t}/{mid}.json").read_text())
            assert table.loc[row, t] == pytest.approx(100 * rec["score"], abs=1e-3)
            assert rec["kind"] == "merged" and rec["model"] == "multitask-pair"
    for row in ("weighted-avg", "TIES", "DARE-resample"):
        assert table.loc[row, "avg_delta"] == pytest.approx(
            (table.loc[row, TASKS] - table.loc["single", TASKS]).mean(), abs=1e-3)
    merged = done / "results/multitask/pair/ties-d0.3-l1.0"
    recipe = json.loads((merged / "merge.json").read_text())
    assert recipe["method_id"] == "ties-d0.3-l1.0" and len(recipe["sub_models"]) == 2
    assert recipe["stats"]["kept"] > 0
    prov = json.loads((merged / "provenance.json").read_text())
    assert prov["rule"] == "multitask_merge"
    md = (done / "results/tables/table3.md").read_text()
    assert md.startswith("### pair\n\n| | gsm8k | sst2 | Avg Δ |")


def _records(done, task, scheme, kind, names):
    base = done / f"results/eval/tiny-llama/{task}/{scheme}/epoch{EPOCHS}/{kind}"
    return [json.loads((base / f"{n}.json").read_text()) for n in names]


def test_table4_compares_the_merges_of_both_order_schemes(done):
    table = pd.read_csv(done / "results/tables/table4.csv", index_col="row")
    assert list(table.index) == ["single", "resample (shuffle)", "resample (fix-batch)",
                                 "single (fix-batch)"]
    for row, scheme, kind, names in (
            ("single", "shuffle", "sft", [f"run{r}" for r in range(K)]),
            ("resample (shuffle)", "shuffle", "merged", [f"resample-n1-s{s}" for s in range(SEEDS)]),
            ("resample (fix-batch)", "fix-batch", "merged", [f"resample-n1-s{s}" for s in range(SEEDS)]),
            ("single (fix-batch)", "fix-batch", "sft", [f"run{r}" for r in range(K)])):
        recs = _records(done, "gsm8k", scheme, kind, names)
        assert table.loc[row, "gsm8k"] == pytest.approx(100 * np.mean([r["score"] for r in recs]), abs=1e-3)
        assert table.loc[row, "gsm8k_n"] == len(names)
    # fix-batch: every run's steps hold the same batches, in another order
    steps = [[tuple(sorted(json.loads(line)["ids"])) for line in (
        done / f"results/sft/tiny-llama/gsm8k/fix-batch/run{r}/steps.jsonl").read_text().splitlines()
        if json.loads(line)["epoch"] == 1] for r in range(K)]
    assert sorted(steps[0]) == sorted(steps[1]) and steps[0] != steps[1]
    assert "resample (fix-batch)" in (done / "results/tables/table4.md").read_text()


def test_figure_data_come_from_their_records(done):
    from ordermerge.report import stats
    fig = done / "results/figures"
    for n in (1, 3, 4):
        assert (fig / f"figure{n}.png").read_bytes()[:4] == b"\x89PNG"
        assert (fig / f"figure{n}.svg").stat().st_size > 1000
    d1 = pd.read_csv(fig / "figure1.csv")
    samples = pd.read_csv(done / "results/sft/tiny-llama/gsm8k/shuffle/run1/samples.csv")
    s1 = samples[samples.epoch == 1].set_index("id")
    mine = d1[d1.model == "run1"].set_index("id")
    assert mine["position"].to_dict() == s1["position"].to_dict()
    # a run's loss after training: its last checkpoint scored by the score rule
    final = pd.read_csv(done / f"results/scores/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/sft/run1/train.csv",
                        index_col="id")["loss"]
    s1 = s1.assign(final_loss=final.reindex(s1.index))
    assert mine["loss"].to_numpy() == pytest.approx(s1.loc[mine.index, "final_loss"].to_numpy(), abs=1e-6)
    score = pd.read_csv(done / f"results/scores/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/merged/avg/train.csv",
                        index_col="id")
    avg = d1[d1.model == "avg"].set_index("id")
    assert avg["loss"].to_numpy() == pytest.approx(score.loc[avg.index, "loss"].to_numpy(), abs=1e-6)
    rho = pd.read_csv(fig / "figure1_rho.csv").set_index(["model", "positions_of"])
    assert rho.loc[("run1", "run1"), "rho"] == pytest.approx(
        stats.spearman(s1["position"], s1["final_loss"]).rho, abs=1e-4)
    assert {("avg", "run0"), ("resample-n1-s0", "run0"), ("run0", "run0")} <= set(rho.index)
    # Figure 3: a segment's mean is the mean of the scored losses of its samples
    d3 = pd.read_csv(fig / "figure3.csv")
    assert set(d3["segment"]) == {1, 2, 3} and set(d3["model"]) == {"run0", "run1", "avg", "resample-n1-s0"}
    anchor = pd.read_csv(done / "results/sft/tiny-llama/gsm8k/shuffle/run0/samples.csv")
    pos = anchor[anchor.epoch == 1].set_index("id")["position"]
    first = pos[pos < 16].index  # 48 samples in 3 segments: positions 0-15 first
    run1 = pd.read_csv(done / f"results/scores/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/sft/run1/train.csv",
                       index_col="id")
    got = d3[(d3.model == "run1") & (d3.segment == 1)]["mean_loss"].item()
    assert got == pytest.approx(run1.loc[first, "loss"].mean(), abs=1e-6)
    # Figure 4: K runs and each merge at save_steps [3] and the two epoch ends (6 steps each)
    d4 = pd.read_csv(fig / "figure4.csv")
    assert sorted(set(d4["step"])) == [3, 6, 12]
    assert len(d4[d4.model.str.startswith("run")]) == K * 3 and len(d4[d4.model == "avg"]) == 3
    curve = pd.read_csv(done / "results/curves/tiny-llama/gsm8k/shuffle/avg.csv")
    assert d4[d4.model == "avg"]["validation_loss"].tolist() == pytest.approx(curve["validation_loss"].tolist())


def test_report_page_and_cost_table(done):
    cost = pd.read_csv(done / "results/tables/cost.csv", index_col=0)
    assert {"rule: sft", "rule: merge", "rule: evaluate", "purpose: Table 4", "total"} <= set(cost.index)
    n_sft = len(list((done / "results/benchmarks/sft").rglob("*.tsv")))
    # both tasks, fix-batch GSM8K, the second decoder's SST-2 and the LoRA runs on GSM8K
    assert cost.loc["rule: sft", "jobs"] == n_sft == 2 * K + K + K + K
    assert cost.loc["total", "wall_h"] > 0
    # the SFT jobs' tokens, summed from their run.json
    runs = [json.loads(f.read_text()) for f in (done / "results/sft").rglob("run.json")]
    assert len(runs) == n_sft and cost.loc["rule: sft", "real_tokens"] == sum(r["real_tokens"] for r in runs)
    assert cost.loc["rule: sft", "padding_efficiency"] == pytest.approx(
        sum(r["real_tokens"] for r in runs) / sum(r["processed_tokens"] for r in runs))
    snakemake(done, *config_args("--report", "results/report.html"))
    html = (done / "results/report.html").read_text(errors="replace")
    assert len(html) > 100_000
    for name in ("figure1.png", "figure3.png", "figure4.png", "table1.csv", "table4.csv", "cost.csv"):
        assert name in html, name


def test_table2_has_a_block_per_model(done):
    table = pd.read_csv(done / "results/tables/table2.csv", index_col="row")
    assert list(table["model"]) == ["tiny-llama", "tiny-llama", "tiny-llama-xs", "tiny-llama-xs"]
    assert list(table.index) == ["single", "param-selection"] * 2
    for model in ("tiny-llama", "tiny-llama-xs"):
        block = table[table.model == model]
        runs = _records_of(done, model, "sst2", "sft", [f"run{r}" for r in range(K)])
        sel = _records_of(done, model, "sst2", "merged", [f"select-s{s}" for s in range(SEEDS)])
        assert block.loc["single", "SST-2"] == pytest.approx(100 * np.mean([r["score"] for r in runs]), abs=1e-3)
        assert block.loc["param-selection", "SST-2"] == pytest.approx(100 * np.mean([r["score"] for r in sel]), abs=1e-3)
        assert block.loc["param-selection", "SST-2_p"] <= 1
    # the second decoder is its own base: a smaller model, its own tokenizer
    cfg = json.loads((done / "results/base/tiny-llama-xs/model/config.json").read_text())
    assert cfg["hidden_size"] == 32
    md = (done / "results/tables/table2.md").read_text()
    assert md.splitlines()[0] == "| model | merge | SST-2 |"  # GSM8K is not one of Table 2's
    assert md.splitlines()[3].startswith("| tiny-llama-xs | param-selection | ")


def _records_of(done, model, task, kind, names):
    base = done / f"results/eval/{model}/{task}/shuffle/epoch{EPOCHS}/{kind}"
    return [json.loads((base / f"{n}.json").read_text()) for n in names]


def _audit(wd, *args):
    """`ordermerge audit ARGS --configfile reduced.yaml` in `wd`: (exit status, stdout)."""
    proc = subprocess.run([sys.executable, "-m", "ordermerge.cli", "audit", *args,
                           "--configfile", "reduced.yaml"], cwd=wd, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, proc.stdout


def test_audit_of_a_completed_run_is_clean_down_to_the_data(done):
    rc, out = _audit(done, "results/tables/table1.csv", "--verify")
    assert rc == 0, out
    assert out.splitlines()[-1].startswith("verify: ") and out.endswith(": clean\n")
    lines = out.splitlines()
    assert lines[0].startswith("table1  results/tables/table1.csv  (")
    for rule in ("evaluate", "evaluate_runs", "evaluate_seeds", "merge", "merge_seeds", "sft",
                 "order", "prepare_data", "base", "tokenizer"):
        assert any(line.lstrip("│├└─ ").startswith(f"{rule}  results/") for line in lines), rule
    assert "source: ordermerge.data toy generator of gsm8k, seed 0" in out


def test_audit_of_one_cell_holds_exactly_its_chain(done):
    rc, out = _audit(done, "results/tables/table1.csv", "--cell", "gsm8k", "resample", "--json")
    doc = json.loads(out)
    by_rule = {}
    for r in doc["records"]:
        by_rule.setdefault(r["rule"], set()).add(r["output"])
    ev = f"results/eval/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/merged"
    assert by_rule["evaluate_seeds"] == {f"{ev}/resample-n1-s{s}.json" for s in range(SEEDS)}
    assert not {"evaluate", "evaluate_runs"} & set(by_rule)  # no other evaluation record
    assert by_rule["merge_seeds"] == {f"results/merged/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/resample-n1-s{s}"
                                      for s in range(SEEDS)}
    assert "merge" not in by_rule  # no other merge
    assert by_rule["sft"] == {f"results/sft/tiny-llama/gsm8k/shuffle/run{r}/epoch{EPOCHS}"
                              for r in range(K)}
    assert by_rule["order"] == {f"results/orders/gsm8k/shuffle/run{r}.json" for r in range(K)}
    assert by_rule["base"] == {"results/base/tiny-llama/model"}
    assert {f"results/data/gsm8k/{s}.jsonl" for s in ("train", "validation", "test")} <= by_rule["prepare_data"]
    merges = [r for r in doc["records"] if r["rule"] == "merge_seeds"]
    assert {r["derived"]["seed"] for r in merges} == set(range(SEEDS))
    assert {r["seeds"]["run"] for r in doc["records"] if r["rule"] == "order"} == set(range(K))
    rc, out = _audit(done, "results/tables/table1.csv", "--cell", "gsm8k", "select")
    assert f"{ev}/select-s1.json" in out and "resample-n1" not in out


def test_audit_names_tampered_stale_and_edited_records(done, tmp_path):
    import shutil
    wd = tmp_path / "copy"
    shutil.copytree(done, wd, symlinks=True)  # copy2 keeps the mtimes
    merged = f"results/merged/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}"
    # one flipped byte in a merged checkpoint
    ck = wd / merged / "resample-n1-s0/model.safetensors"
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 1
    ck.write_bytes(bytes(data))
    # an evaluation record edited by hand
    ev = f"results/eval/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/sft/run0.json"
    rec = json.loads((wd / ev).read_text())
    rec["score"] = 1.0
    (wd / ev).write_text(json.dumps(rec))
    # one merge job re-run by hand (its record's command line: the merge_seeds job that made
    # both selection seeds), its evaluations not re-run; in a clean tree (earlier tests left
    # config files here, which would make it `dirty`)
    subprocess.run(["git", "-C", str(wd), "clean", "-fdq"], check=True)
    argv = json.loads((wd / merged / "select-s0/provenance.json").read_text())["argv"]
    assert [a for a in argv if a.startswith(merged)] == [f"{merged}/select-s{s}" for s in range(SEEDS)]
    subprocess.run([sys.executable, *argv], cwd=wd, check=True, capture_output=True)
    # a record's param edited
    order = wd / "results/orders/sst2/shuffle/run1.json.prov.json"
    orec = json.loads(order.read_text())
    orec["params"]["seed"] = 5
    order.write_text(json.dumps(orec))
    rc, out = _audit(wd, "results/tables/table1.csv", "--verify", "--json")
    assert rc == 1
    doc = json.loads(out)
    got = {}
    for p in doc["problems"]:
        got.setdefault(p["kind"], set()).add((p["file"], p["record"]))
    assert set(got) == {"tampered", "stale", "params"}, doc["problems"]
    assert got["tampered"] == {(f"{merged}/resample-n1-s0/model.safetensors",
                                f"{merged}/resample-n1-s0/provenance.json"),
                               (ev, ev + ".prov.json")}
    stale_evals = {f"results/eval/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}/merged/select-s{s}.json.prov.json"
                   for s in range(SEEDS)}
    assert {r for _, r in got["stale"]} == stale_evals  # exactly the consumers of those merges
    assert all(f.startswith((f"{merged}/select-s0/", f"{merged}/select-s1/")) for f, _ in got["stale"])
    assert got["params"] == {("results/orders/sst2/shuffle/run1.json", str(order.relative_to(wd)))}
    assert doc["summary"]["tampered"] == 2 and doc["summary"]["params"] == 1


def test_table5_general_benchmarks_and_the_audit_of_a_cell(done):
    """GSM8K's models (base, K runs, every merge at the report epoch) on the first 12 items of
    the tiny lm-eval benchmarks; each cell's records and its audit chain down to the runs."""
    table = pd.read_csv(done / "results/tables/table5.csv", index_col="row")
    assert set(table["finetuned"]) == {"gsm8k"}
    assert list(table.index[:2]) == ["base", "single"] and "param-selection" in table.index
    assert table.loc["single", "tiny_facts_n"] == K and table.loc["param-selection", "tiny_sums_n"] == SEEDS
    assert table.loc["base", "tiny_facts_n"] == 1
    for col in ("tiny_facts", "tiny_sums"):
        assert table[col].between(0, 100).all() and table[f"{col}_p"].drop("single").notna().all()
    gen = done / f"results/general/tiny-llama/gsm8k/shuffle/epoch{EPOCHS}"
    recs = [json.loads((gen / f"sft/run{r}/tiny_facts.json").read_text()) for r in range(K)]
    assert all(r["n"] == 12 and len(r["examples"]) == 12 for r in recs)
    # the CSV's four decimals: half a unit of the last
    assert table.loc["single", "tiny_facts"] == pytest.approx(
        100 * sum(r["score"] for r in recs) / K, abs=5e-5)
    lm = recs[0]["lm_eval"]
    assert lm["batch_size"] == 16 and lm["limit"] == 12 and lm["backend"] == "hf"
    assert lm["tasks"]["tiny_facts"]["n_shot"] == 0 and len(lm["tasks"]["tiny_facts"]["config_sha256"]) == 64
    assert lm["command"].startswith("lm_eval --model hf --model_args pretrained=results/sft/")
    rc, out = _audit(done, "results/tables/table5.csv", "--cell", "tiny_facts", "resample",
                     "--block", "gsm8k", "--json")
    assert rc == 0, out
    by_rule = {}
    for r in json.loads(out)["records"]:
        by_rule.setdefault(r["rule"], set()).add(r["output"])
    assert by_rule["general_eval_seeds"] == {f"{gen}/merged/resample-n1-s{s}/tiny_facts.json"
                                             .replace(f"{done}/", "") for s in range(SEEDS)}
    assert "general_eval_runs" not in by_rule and "evaluate_seeds" not in by_rule
    assert by_rule["sft"] == {f"results/sft/tiny-llama/gsm8k/shuffle/run{r}/epoch{EPOCHS}"
                              for r in range(K)}


def test_every_job_imported_only_the_code_its_rule_declares(done):
    """Each job's log ends with the package files its process imported (runner.TRACE, set
    for this run by conftest): each must be among the job's inputs as Snakemake recorded
    them, so that editing it reruns the job. Catches an import no computed closure sees
    (a module loaded by name) and a rule that declares another script's code. And every
    direct dependency the job loaded is pinned in its rule's environment file (envs/)."""
    checked, rules, used = check_job_imports(done)
    assert {"torch", "transformers", "accelerate", "pandas", "matplotlib", "numba"} <= used
    assert checked >= 60 and {"sft", "merge_seeds", "evaluate_runs", "score", "curve", "table1",
                              "cost", "multitask_merge", "prepare_data", "figure1"} <= rules


def test_the_projection_counts_the_tokens_each_sft_job_trained(done, tmp_path):
    """`ordermerge plan` of the finished run: each SFT job's projected trained tokens are
    the tokens its run.json says it trained (the data and tokenizer are on disk), its
    checkpoints' bytes the files' within the tokenizer and config files; the jobs are the
    benchmarked ones."""
    from ordermerge.merge.st_io import read_header
    from ordermerge.report.cost import read_benchmarks
    from workflow_helpers import ROOT
    out = tmp_path / "plan"
    proc = subprocess.run([sys.executable, "-m", "ordermerge.cli", "plan", "--configfile",
                           *REDUCED_ARGS[1:], "--out", str(out), "--measured",
                           "results/tables/cost.csv"], cwd=done, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = pd.read_csv(out / "jobs.csv")
    assert sorted(jobs["path"]) == sorted(read_benchmarks(done / "results/benchmarks")["path"])
    sft = jobs[jobs["job_rule"] == "sft"]
    assert len(sft) > 0
    for _, job in sft.iterrows():
        run = done / "results" / job["path"].removesuffix(".tsv")
        summary = json.loads((run / "run.json").read_text())
        assert job["trained_tokens"] == summary["real_tokens"], job["path"]
        # the tensors' bytes (a LoRA run's adapters are small enough at this size that their
        # files' headers are 5% of them)
        on_disk = sum(i.nbytes for f in run.rglob("*.safetensors") for i in read_header(f)[0].values())
        assert 0.95 * on_disk <= job["written_bytes"] <= on_disk, job["path"]
    assert "| total |" in proc.stdout and "projected / measured" in proc.stdout
    assert "gsm8k: data (results/data/gsm8k" in proc.stdout


def test_bench_calibrate_smoke(done, tmp_path):
    """bench/calibrate.py at toy sizes, its fixed costs fitted on the finished run: a
    calibration `ordermerge plan` accepts."""
    from ordermerge.workflow.projection import load_calibration
    from workflow_helpers import ROOT
    out = tmp_path / "cal.yaml"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "calibrate.py"), "--run", str(done),
                           "--configfile", *REDUCED_ARGS[1:], "--repeats", "1", "--batch", "2",
                           "--length", "16", "--new-tokens", "4", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cal = load_calibration(out)
    assert cal["train_flops_per_s"] > 0 and cal["decode_steps"] == "limit"
    assert {"sft", "evaluate", "merge", "default"} <= set(cal["overhead_s"])
    assert all(v >= 0 for v in cal["overhead_s"].values())


def test_greedy_soup_follows_the_validation_records(done):
    """Each greedy soup starts from the run with the best validation record (validate_runs,
    on the validation split), tries the others, and averages the kept runs uniformly."""
    for epoch in (1, 2):
        v = done / f"results/validation/tiny-llama/gsm8k/shuffle/epoch{epoch}"
        recs = [json.loads((v / f"run{r}.json").read_text()) for r in range(K)]
        assert all(r["n"] == 8 for r in recs)  # n_validation of the reduced config
        assert all((v / f"run{r}.json.prov.json").is_file() for r in range(K))
        scores = [r["score"] for r in recs]
        merged = done / f"results/merged/tiny-llama/gsm8k/shuffle/epoch{epoch}/greedy-soup"
        recipe = json.loads((merged / "merge.json").read_text())
        soup = recipe["soup"]
        assert soup["validation_scores"] == scores
        assert soup["steps"][0]["run"] == min(range(K), key=lambda i: (-scores[i], i))
        assert [s["run"] for s in soup["steps"]] == sorted(range(K), key=lambda i: (-scores[i], i))
        kept = soup["kept"]
        assert recipe["weights"] == [1 / len(kept) if i in kept else 0.0 for i in range(K)]
        assert soup["steps"][1]["kept"] == (len(kept) == 2)
