"""The grid's projected cost and disk (ordermerge/workflow/projection.py, `ordermerge plan`).

The paper config is projected from a Snakemake dry run of a copy of the project: its jobs
are Snakemake's, and an SFT job's tokens, hours and disk are the formulas of the module
docstring at the H200 calibration, recomputed here by hand. The projection of a finished
run's tokens against the tokens that run trained is in test_workflow.py (it needs the
reduced run); its wall time against a measured run is bench/calibrate.py's (bench/RESULTS.md).
"""
import math
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from ordermerge.data.tasks import TASKS
from ordermerge.workflow.memory import Shape
from ordermerge.workflow.dryrun import parse_dry_run
from ordermerge.workflow.projection import CALIBRATION, ProjectionError, load_calibration
from workflow_helpers import ROOT, copy_project

DRY = """\
rule sft:
    input: scripts/sft.py, results/base/m/model, results/data/gsm8k/train.jsonl
    output: results/sft/m/gsm8k/shuffle/run2/epoch1, results/sft/m/gsm8k/shuffle/run2/run.json
    benchmark: results/benchmarks/sft/m/gsm8k/shuffle/run2.tsv
    wildcards: model=m, task=gsm8k, scheme=shuffle, run=2
Shell command: python x.py --task gsm8k --params '{"lr": 0.1, "save_steps": [3]}' > log 2>&1

localrule table1:
    input: results/eval/a.json
    output: results/tables/table1.csv
"""


def test_the_dry_run_is_read_job_by_job():
    sft, table = parse_dry_run(DRY)
    assert (sft.rule, table.rule) == ("sft", "table1")
    assert sft.wildcards == {"model": "m", "task": "gsm8k", "scheme": "shuffle", "run": "2"}
    assert sft.inputs[1] == "results/base/m/model" and len(sft.outputs) == 2
    assert sft.benchmark == "results/benchmarks/sft/m/gsm8k/shuffle/run2.tsv"
    assert sft.params() == {"lr": 0.1, "save_steps": [3]}
    assert table.benchmark is None and table.params() == {}


def test_a_bad_calibration_is_named(tmp_path):
    cal = yaml.safe_load(CALIBRATION.read_text())
    assert load_calibration()["train_flops_per_s"] == 3.3e14
    f = tmp_path / "cal.yaml"
    f.write_text(yaml.safe_dump({**cal, "train_flops_per_s": 0}))
    with pytest.raises(ProjectionError, match=r"cal.yaml: train_flops_per_s must be a positive"):
        load_calibration(f)
    f.write_text(yaml.safe_dump({k: v for k, v in cal.items() if k != "overhead_s"}))
    with pytest.raises(ProjectionError, match="overhead_s must map rules or stages"):
        load_calibration(f)


def test_every_task_has_stats_for_projections_before_its_data():
    from ordermerge.data.stats import STATS
    assert set(STATS) == set(TASKS)
    for name, s in STATS.items():
        assert s["train_rows"] > s["test_rows"] > 0 and s["train_tokens"] > 0, name


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """`ordermerge plan --configfile config/paper.yaml` in a copy of the project."""
    wd = copy_project(tmp_path_factory.mktemp("plan") / "project", bare=False)
    proc = subprocess.run([sys.executable, "-m", "ordermerge.cli", "plan", "--configfile",
                           "config/paper.yaml"], cwd=wd, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wd, proc.stdout


def test_the_paper_grid_is_projected_job_by_job(paper):
    wd, out = paper
    jobs = pd.read_csv(wd / "results" / "plan" / "jobs.csv")
    table = pd.read_csv(wd / "results" / "plan" / "projection.csv", index_col=0)
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    k = cfg["num_sub_models"]
    # Table 1's five tasks x K runs (shuffle) + Table 2's and Table 4's runs: Snakemake's jobs
    sft = jobs[jobs["job_rule"] == "sft"]
    assert len(sft) == table.loc["rule: sft", "jobs"] == 460
    assert table.loc["total", "jobs"] == len(jobs)
    # in a fixed order (the dry run's is not): the same config gives the same bytes
    assert list(jobs["path"]) == sorted(jobs["path"])
    # one GSM8K run of Llama-2-7b, by hand: tokens from the task entry's stats
    from ordermerge.data.stats import STATS
    stats = STATS["gsm8k"]
    tr = cfg["tasks"]["gsm8k"]["train"]
    n_val = cfg["tasks"]["gsm8k"]["data"]["n_validation"]
    tokens = 3 * (stats["train_rows"] - n_val) * min(stats["train_tokens"], tr["max_length"])
    run = sft[sft["path"] == "sft/llama-2-7b/gsm8k/shuffle/run0.tsv"].iloc[0]
    assert run["trained_tokens"] == tokens
    shape = Shape.from_config(cfg["model"]["shape"])
    n = shape.parameters()
    cal = load_calibration()
    checkpoints = 3 + len(tr.get("save_steps") or [])
    seconds = (cal["overhead_s"]["sft"] + 6 * n * tokens / cal["train_flops_per_s"]
               + 2 * n * 3 * n_val * min(stats["train_tokens"], tr["max_length"])
               / cal["forward_flops_per_s"]
               + (1 + checkpoints) * (cal["load_s"] + 2 * n / cal["io_bytes_per_s"]))
    gpus = cfg["resources"]["sft"]["gpus"]
    assert run["wall_s"] == pytest.approx(seconds, rel=1e-9)
    assert run["gpu_h"] == pytest.approx(seconds * gpus / 3600, rel=1e-9)
    assert run["written_bytes"] == checkpoints * 2 * n  # bf16 checkpoints
    assert 0.1 < seconds / 3600 < 0.5  # 3 epochs of 7.3k rows (4.2M tokens) at ~8k tokens/s
    # the rows of the table add up, and the report says where the sizes came from
    assert table.loc["total", "gpu_h"] == pytest.approx(jobs["gpu_h"].sum())
    assert table.loc["stage: sft", "gpu_h"] == pytest.approx(sft["gpu_h"].sum())
    assert "gsm8k: task entry stats (measured" in out and "| total |" in out
    assert "with them kept" in out and math.isfinite(table.loc["total", "written_gb"])
    # disk: every sub-model checkpoint and every run's Fisher (float32, 4 bytes a parameter)
    # is what temporary_checkpoints removes
    fisher = jobs[jobs["job_rule"] == "diagonal_fisher"]
    llama = fisher[fisher["path"].str.startswith("diagonal_fisher/llama-2-7b/")]
    assert len(fisher) == 15 * k * 3 and len(llama) > 0 and (llama["written_bytes"] == 4 * n).all()
    # and RegMean's Grams: in^2 float32 per linear weight (Llama-2-7b: 32 layers of six
    # 4096^2 and one 11008^2, and the LM head's 4096^2)
    gram = jobs[jobs["job_rule"] == "input_gram"]
    llama_gram = gram[gram["path"].str.startswith("input_gram/llama-2-7b/")]
    h, i = shape.hidden_size, shape.intermediate_size
    assert len(llama_gram) > 0 and (llama_gram["written_bytes"] == 4 * (32 * (6 * h * h + i * i) + h * h)).all()
    assert jobs["temporary_bytes"].sum() == (sft["written_bytes"].sum() + fisher["written_bytes"].sum()
                                             + gram["written_bytes"].sum())
    assert k == 20


def test_greedy_soups_candidates_are_priced_at_two_reads(paper):
    """A candidate soup reads the run and the soup's float32 sum and writes both
    (greedy_soup.RunningSoup), whatever its size: K - 1 candidates of one pass each, beside
    K - 1 validation evaluations and the final merge of K runs."""
    wd, _ = paper
    jobs = pd.read_csv(wd / "results" / "plan" / "jobs.csv")
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    cal = load_calibration()
    k, n = cfg["num_sub_models"], Shape.from_config(cfg["model"]["shape"]).parameters()
    soup = jobs[jobs["path"] == "merge_soup/llama-2-7b/gsm8k/shuffle/epoch3/greedy-soup.tsv"].iloc[0]
    val = jobs[jobs["path"] == "validate_runs/llama-2-7b/gsm8k/shuffle/epoch3/runs.tsv"].iloc[0]
    io = lambda b: cal["load_s"] + b / cal["io_bytes_per_s"]  # noqa: E731
    merge = k * 2 * n / cal["merge_bytes_per_s"] + io(2 * n)
    candidate = (2 * n + 4 * n) / cal["merge_bytes_per_s"] + io(2 * n) + io(4 * n)
    one_eval = (val["wall_s"] - cal["overhead_s"].get("validate_runs", cal["overhead_s"]["default"])) / k
    fixed = cal["overhead_s"].get("merge_soup", cal["overhead_s"]["default"])
    assert soup["wall_s"] == pytest.approx(fixed + merge + (k - 1) * (one_eval + candidate), rel=1e-6)


def test_the_paper_grids_general_benchmarks_are_priced_per_model(paper):
    """Table 5's jobs (config/paper.yaml's five lm-eval benchmarks): one job of the K runs of
    GSM8K by hand from general_eval.BENCHMARK_SIZES, and the base's job, one model."""
    from ordermerge.general_eval import BENCHMARK_SIZES
    wd, out = paper
    jobs = pd.read_csv(wd / "results" / "plan" / "jobs.csv")
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    g = cfg["general_eval"]
    general = jobs[jobs["rule"] == "general_eval"]
    assert set(general["purpose"]) == {"Table 5"}
    runs = general[general["path"] == "general_eval/llama-2-7b/gsm8k/shuffle/epoch3/sft/runs.tsv"].iloc[0]
    base = general[general["path"] == "general_eval/llama-2-7b/base.tsv"].iloc[0]
    scored = generated = 0
    for name in g["tasks"]:
        b = BENCHMARK_SIZES[name]
        prompt = b["prompt"] + b["shots"] * b["shot"]
        if b["options"]:
            scored += b["items"] * b["options"] * (prompt + b["answer"])
        else:
            scored += b["items"] * prompt
            generated += b["items"] * b["answer"]
    k = cfg["num_sub_models"]
    assert runs["scored_tokens"] == pytest.approx(k * scored) and base["scored_tokens"] == pytest.approx(scored)
    assert runs["generated_tokens"] == pytest.approx(k * generated)
    # K models' work against one model's, the job's fixed cost once
    o = load_calibration()["overhead_s"]
    fixed = float(o.get("general_eval_runs", o.get("evaluate", o["default"])))
    assert runs["wall_s"] - fixed == pytest.approx(k * (base["wall_s"] - fixed), rel=1e-9)
    assert "| purpose: Table 5 |" in out
    # every Table 1 decoder task's models, not the default run's GSM8K only (paper.yaml
    # extends config.yaml, which names finetuned: [gsm8k]): one runs job per task at least
    finetuned = {p.split("/")[2] for p in general["path"] if p.endswith("/runs.tsv")}
    llama_sft = {p.split("/")[2] for p in jobs.loc[jobs["job_rule"] == "sft", "path"]
                 if p.startswith("sft/llama-2-7b/")}
    assert finetuned == llama_sft and len(finetuned) == 12
    assert "general_eval mmlu: general_eval.BENCHMARK_SIZES (tokens estimated)" in out


def test_the_help_names_the_calibration():
    proc = subprocess.run([sys.executable, "-m", "ordermerge.cli", "plan", "--help"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "calibration" in proc.stdout and "--measured" in proc.stdout


def test_plan_replaces_only_an_output_directory_it_wrote(tmp_path, capsys):
    from ordermerge.cli import main
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "jobs.csv").write_text("a user's file\n")
    assert main(["plan", "--out", str(mine)]) == 1
    err = capsys.readouterr().err
    assert "exists and is not a previous output (it has no plan.json)" in err
    assert (mine / "jobs.csv").read_text() == "a user's file\n"
    for bad in ("", "."):
        assert main(["plan", "--out", bad]) == 1
        assert "is the current directory or holds it" in capsys.readouterr().err


def test_a_rule_without_a_cost_model_is_an_error(monkeypatch):
    """A rule Projector.work did not list cost 0 GPU-hours, silently (issue 39)."""
    from ordermerge.workflow.config import load
    from ordermerge.workflow.plan import Plan
    from ordermerge.workflow.projection import DryJob, Projector
    monkeypatch.chdir(ROOT)
    plan = Plan(load("config.yaml"))
    proj = Projector(plan, load_calibration(CALIBRATION))
    job = DryJob(rule="new_rule", wildcards={"model": plan.config["model"]["name"],
                                             "task": "gsm8k"})
    with pytest.raises(ProjectionError, match=r"rule 'new_rule' has no cost model"):
        proj.work(job)


def test_every_declared_rule_has_its_cost_model():
    """Each rule's cost model is declared with its stage (stages.py) and is a method of the
    projection; the evaluator kinds' generate/choose/score split is the evaluators' own."""
    from ordermerge.workflow.projection import Projector
    from ordermerge.workflow.stages import FAMILIES, RULES
    declared = {r.cost for r in RULES.values()} | {r.cost for r, _ in FAMILIES.values()}
    missing = sorted(c for c in declared if not callable(getattr(Projector, f"cost_{c}", None)))
    assert missing == [] and {"free", "sft", "merge", "evaluate"} <= declared


def test_the_real_model_tier_is_projected_on_a_gpu(tmp_path):
    """`ordermerge plan --configfile config/smollm2-gsm8k.yaml`: its K = 4 runs and two
    controls of 3 epochs of 128 GSM8K rows, on the calibration's GPU; the config asks for
    no GPU, so the report says what the wall column means."""
    wd = copy_project(tmp_path / "project", bare=False)
    proc = subprocess.run([sys.executable, "-m", "ordermerge.cli", "plan", "--configfile",
                           "config/smollm2-gsm8k.yaml"], cwd=wd, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = pd.read_csv(wd / "results" / "plan" / "jobs.csv")
    table = pd.read_csv(wd / "results" / "plan" / "projection.csv", index_col=0)
    sft = jobs[jobs["job_rule"] == "sft"]
    assert sorted(sft["path"]) == [f"sft/smollm2-135m/gsm8k/{s}/run{r}.tsv" for s, r in
                                   [("control-repeat", 0), ("control-reseed", 0)] + [("shuffle", r) for r in range(4)]]
    from ordermerge.data.stats import STATS
    tr = yaml.safe_load((ROOT / "config" / "smollm2-gsm8k.yaml").read_text())["tasks"]["gsm8k"]["train"]
    assert (sft["trained_tokens"] == 3 * 128 * min(STATS["gsm8k"]["train_tokens"], tr["max_length"])).all()
    assert table.loc["total", "gpu_h"] == 0 and table.loc["total", "wall_h"] > 0
    assert (f"its {len(jobs)} jobs take {table.loc['total', 'wall_h']:.3g} h one after the other"
            in proc.stdout)
