"""Table 5: general benchmarks through lm-evaluation-harness (ordermerge/general_eval.py).

The records made from lm-eval's results (groups, filters, metrics), the tiny suite's task
files, the config check, the offline failure, Table 5's build, and the agreement of lm-eval's
multiple-choice accuracy with the project's own log-likelihood choice scorer, item by item,
on the tiny base and on SmolLM2-135M.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_helpers import ROOT, copy_project, made_once, planned_jobs
from workflow_helpers import tiny_base as made_tiny_base

TINY = ROOT / "config" / "lm_eval" / "tiny"
SETTINGS = {"tasks": ["tiny_facts", "tiny_sums"], "include_path": [str(TINY)], "metrics": {},
            "num_fewshot": None, "limit": None, "batch_size": 8, "backend": "hf", "seed": 1234,
            "apply_chat_template": False, "add_bos_token": True, "max_length": None, "vllm": None}


def test_the_tiny_task_files_are_what_the_generator_writes():
    from ordermerge.data.general_items import general_items
    for name, rows in general_items(60, 20261207).items():
        lines = (TINY / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(x) for x in lines] == rows
    facts = general_items(60, 20261207)["tiny_facts"]
    # four distinct options, the label on the true result of the sentence's arithmetic
    for r in facts:
        a, op, b = r["question"].split("That is ")[1].rstrip(" =").split()
        want = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert len(set(r["choices"])) == 4 and r["choices"][r["label"]] == str(want)


def test_local_tasks_are_found_by_name_and_their_files_are_inputs():
    from ordermerge.general_eval import data_files, local_tasks
    found = local_tasks([TINY])
    assert found == {"tiny_facts": TINY / "tiny_facts.yaml", "tiny_sums": TINY / "tiny_sums.yaml"}
    assert [Path(f).name for f in data_files([TINY], ["tiny_sums"])] == [
        "tiny_facts.jsonl", "tiny_facts.yaml", "tiny_sums.jsonl", "tiny_sums.yaml"]
    assert data_files([TINY], ["mmlu"]) == []


def _sample(doc_id, filt="none", **metrics):
    return {"doc_id": doc_id, "filter": filt, "target": 0, "doc_hash": f"d{doc_id}",
            "prompt_hash": f"p{doc_id}", "resps": [[" 4"]], "filtered_resps": ["4"], **metrics}


def _results(samples, results, group_subtasks=None, hib=None):
    return {"samples": samples, "results": results, "group_subtasks": group_subtasks or {},
            "configs": {t: {"task": t} for t in samples}, "versions": {t: 1.0 for t in samples},
            "n-shot": {t: 0 for t in samples}, "higher_is_better": hib or {},
            "lm_eval_version": "0.4.13"}


def test_a_group_record_holds_every_subtask_item_and_scores_their_mean():
    """A group's column is the mean over all its subtasks' items (lm-eval's size-weighted
    aggregate); its items are prefixed by subtask; each subtask's version and config hash."""
    from ordermerge.general_eval import records_of
    res = _results({"g_a": [_sample(0, acc=1.0), _sample(1, acc=0.0)],
                    "g_b": [_sample(0, acc=1.0), _sample(1, acc=1.0), _sample(2, acc=1.0)]},
                   {"g": {"acc,none": 0.7}, "g_a": {"acc,none": 0.5}, "g_b": {"acc,none": 1.0}},
                   {"g": ["g_a", "g_b"]})
    rec = records_of(res, {**SETTINGS, "tasks": ["g"]}, {"backend": "hf"})["g"]
    assert rec["score"] == pytest.approx(4 / 5) and rec["n"] == 5
    assert [e["id"] for e in rec["examples"]] == ["g_a:0", "g_a:1", "g_b:0", "g_b:1", "g_b:2"]
    assert set(rec["lm_eval"]["tasks"]) == {"g_a", "g_b"}
    assert rec["lm_eval"]["aggregate"] == 0.7 and rec["metric"] == "acc,none"


def test_the_metric_and_filter_chosen_and_refused():
    from ordermerge.general_eval import records_of
    from ordermerge.utils import InputError
    samples = {"t": [_sample(0, "strict", exact_match=1.0), _sample(0, "flex", exact_match=0.0),
                     _sample(1, "strict", exact_match=0.0), _sample(1, "flex", exact_match=1.0)]}
    res = _results(samples, {"t": {"exact_match,strict": 0.5, "exact_match_stderr,strict": 0.1,
                                   "exact_match,flex": 0.5}})
    s = {**SETTINGS, "tasks": ["t"]}
    first = records_of(res, s, {})["t"]
    assert first["metric"] == "exact_match,strict" and [e["correct"] for e in first["examples"]] == [1.0, 0.0]
    flex = records_of(res, {**s, "metrics": {"t": "exact_match,flex"}}, {})["t"]
    assert [e["correct"] for e in flex["examples"]] == [0.0, 1.0]
    with pytest.raises(InputError, match=r"general_eval.metrics.t: 'bleu' is not one"):
        records_of(res, {**s, "metrics": {"t": "bleu"}}, {})
    # a per-item value outside [0, 1] cannot be a column of percentages
    bad = _results({"t": [_sample(0, perplexity=13.0)]}, {"t": {"perplexity,none": 13.0}})
    with pytest.raises(InputError, match=r"perplexity of item 0 is 13.0, not a per-item value"):
        records_of(bad, s, {})
    low = _results({"t": [_sample(0, ter=0.5)]}, {"t": {"ter,none": 0.5}}, hib={"t": {"ter": False}})
    with pytest.raises(InputError, match=r"lower ter is better"):
        records_of(low, s, {})


def _config(**general):
    from ordermerge.workflow.config import load
    import yaml
    return yaml.safe_dump({"general_eval": {**{"tasks": ["tiny_facts"],
                                               "include_path": ["config/lm_eval/tiny"]}, **general}})


@pytest.mark.parametrize("general, message", [
    ({"finetuned": ["glue_sst2"]}, "general_eval.finetuned: 'glue_sst2' is not a decoder task of Table 1"),
    ({"include_path": ["no/such/dir"]}, "general_eval.include_path: no/such/dir is not a directory"),
    ({"metrics": {"tiny_sums": "acc"}}, "general_eval.metrics.tiny_sums: not one of general_eval.tasks"),
    ({"tasks": ["arc_chalenge"]}, "general_eval.tasks: 'arc_chalenge': no task of that name"),
    ({"batch_size": "auto"}, "general_eval.batch_size: 'auto' is not of type 'integer'"),
])
def test_the_config_check_refuses_by_key(tmp_path, monkeypatch, general, message):
    from ordermerge.workflow.config import ConfigError, load
    monkeypatch.chdir(ROOT)
    f = tmp_path / "g.yaml"
    f.write_text(_config(**general))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load(f)
    # real benchmark names pass the check (lm-eval's own task files name them)
    f.write_text(_config(tasks=["mmlu", "arc_challenge", "hellaswag", "truthfulqa_mc2", "gsm8k"],
                         include_path=[]))
    assert load(f)["general_eval"]["tasks"][0] == "mmlu"


def test_a_null_or_absent_section_makes_no_table5(tmp_path, monkeypatch):
    """general_eval: null (config/smollm2.yaml, the tests' bare projects) or absent: no
    general jobs and no Table 5, through Snakemake's own default filler too (which fills a
    section's keys wherever the section has a default)."""
    from ordermerge.workflow.config import load
    from ordermerge.workflow.plan import Plan
    monkeypatch.chdir(ROOT)
    f = tmp_path / "n.yaml"
    f.write_text("general_eval: null\n")
    cfg = load(f)
    assert cfg["general_eval"] is None
    plan = Plan(cfg)
    assert plan.general_records() == [] and "5" not in plan.tables()
    wd = copy_project(tmp_path / "project")  # bare: config.yaml's general_eval is null
    (wd / "t.yaml").write_text("tasks: {sst2: {data: {source: toy, n_train: 16, n_validation: 4, "
                               "n_test: 4}}}\n")
    jobs = planned_jobs(wd, "--configfile", "config.yaml", "t.yaml")
    assert jobs and not [r for r in jobs if r.startswith("general_eval") or r == "table5"]


def test_a_hub_task_offline_fails_in_one_line(tmp_path):
    """No network here: a task whose data is a hub dataset fails at once, in one line naming
    the task and the dataset's error (a local YAML naming the hub's ARC: lm-eval's own index
    of 14,000 task files is not needed to show it)."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "arc_hub.yaml").write_text(
        "task: arc_hub\ndataset_path: allenai/ai2_arc\ndataset_name: ARC-Easy\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices.text}}'\ndoc_to_target: 0\n")
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from ordermerge.general_eval import task_manager, load_tasks\n"
            "s = {'tasks': ['arc_hub'], 'include_path': [%r]}\n"
            "load_tasks(task_manager(s), s)\n") % (str(ROOT), str(tmp_path / "tasks"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ordermerge.utils.InputError: general_eval.tasks: the data of arc_hub "
                           "cannot be loaded (offline: HF_HUB_OFFLINE is set): "), p.stderr[-2000:]
    assert "allenai/ai2_arc" in last


def _record(finetuned, kind, name, task, items, path):
    return {"finetuned": finetuned, "task": task, "kind": kind, "name": name,
            "score": sum(items.values()) / len(items), "items": items, "path": path,
            "generation": {"backend": "hf"}}


def test_table5_blocks_rows_and_paired_tests():
    """Per fine-tuning task: base, single (mean ± std over runs), the merges; a column per
    benchmark; every row tested against single on the same items."""
    from ordermerge.report import tables
    n = 16
    ones, zeros = {str(i): 1.0 for i in range(n)}, {str(i): 0.0 for i in range(n)}
    half = {str(i): float(i % 2) for i in range(n)}
    recs = []
    for ft in ("gsm8k", "sst2"):
        recs.append(_record(ft, "base", "base", "tiny_facts", ones, "b"))
        recs += [_record(ft, "sft", f"run{r}", "tiny_facts", half, "r") for r in range(2)]
        recs.append(_record(ft, "merged", "avg", "tiny_facts", ones if ft == "gsm8k" else zeros, "m"))
    table, md, tex = tables.build("5", recs, {"resamples": 1000, "seed": 0})
    assert list(table.index) == ["base", "single", "weighted-avg"] * 2
    assert list(table["finetuned"]) == ["gsm8k"] * 3 + ["sst2"] * 3
    g = table[table["finetuned"] == "gsm8k"]
    assert g.loc["single", "tiny_facts"] == 50.0 and g.loc["single", "tiny_facts_n"] == 2
    assert g.loc["weighted-avg", "tiny_facts"] == 100.0
    # 8 items differ, all one way: the exact sign-flip p is 2 / 2^8
    assert g.loc["weighted-avg", "tiny_facts_p"] == pytest.approx(2 / 256)
    assert g.loc["base", "tiny_facts_p"] == pytest.approx(2 / 256)
    assert math.isnan(g.loc["single", "tiny_facts_p"])
    s = table[table["finetuned"] == "sst2"]
    assert s.loc["weighted-avg", "tiny_facts"] == 0.0 and s.loc["weighted-avg", "avg_delta"] == -50.0
    assert "### fine-tuned on gsm8k" in md and "| base | 100.00** | +50.00 |" in md
    assert "fine-tuned on sst2" in tex
    cells = tables.cells_of(recs, "5")
    assert cells[0] == ("gsm8k", "tiny_facts", "base") and cells[3] == ("gsm8k", "tiny_facts", "weighted-avg")


def test_table5_refuses_mixed_backends():
    from ordermerge.report import tables
    a = _record("gsm8k", "sft", "run0", "tiny_facts", {"0": 1.0}, "a.json")
    b = {**_record("gsm8k", "merged", "avg", "tiny_facts", {"0": 1.0}, "b.json"),
         "generation": {"backend": "vllm"}}
    with pytest.raises(ValueError, match="table 5: its records were generated by different backends"):
        tables.check_backends([a, b], "5")


# ------------------------------------------------------------------ on real checkpoints
@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """The tiny suite's base, pretrained 60 steps by the workflow (shared with test_vllm)."""
    return made_tiny_base(tmp_path_factory)


def test_lean_lm_eval_changes_no_record(tiny_base, monkeypatch):
    """lean_lm_eval (no environment report, templates compiled once) gives the records lm-eval
    gives without it, byte for byte."""
    monkeypatch.chdir(ROOT)
    code = ("import sys, json; sys.path.insert(0, %r)\n"
            "from ordermerge import general_eval as G\n"
            "G.lean_lm_eval = lambda: None\n"
            "print(json.dumps(G.evaluate_general(%r, json.loads(sys.argv[1])), sort_keys=True))\n"
            ) % (str(ROOT), str(tiny_base))
    s = {**SETTINGS, "limit": 12}
    p = subprocess.run([sys.executable, "-c", code, json.dumps(s)], capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    plain = json.loads(p.stdout.strip().splitlines()[-1])
    from ordermerge.general_eval import evaluate_general
    lean = json.loads(json.dumps(evaluate_general(tiny_base, s), sort_keys=True))
    assert lean == plain
    assert lean["tiny_facts"]["n"] == 12 and lean["tiny_sums"]["n"] == 12


def _agreement(model_dir, tmp_path, limit=None):
    """lm-eval's multiple_choice accuracy and the project's option log-likelihood scorer
    (evaluate/choice.py) on the same items and prompts (the first `limit`): the options'
    summed log-likelihoods and the chosen option, item by item."""
    import torch

    from ordermerge.evaluate.choice import option_logliks
    from ordermerge.general_eval import evaluate_general
    from ordermerge.models import load_model
    rows = [json.loads(x) for x in (TINY / "tiny_facts.jsonl").read_text().splitlines()][:limit]
    s = {**SETTINGS, "tasks": ["tiny_facts"], "limit": limit}
    rec = evaluate_general(model_dir, s)["tiny_facts"]
    model, tok = load_model(model_dir, dtype=torch.float32)
    ours = option_logliks(model, tok, [r["question"] for r in rows], [r["choices"] for r in rows],
                          batch_size=8)
    theirs = [e["logliks"] for e in rec["examples"]]
    assert [e["id"] for e in rec["examples"]] == [str(r["id"]) for r in rows]
    return rows, rec, ours, theirs


# Tolerance of two float32 forward passes of the same tokens in different batch shapes
# (lm-eval pads a batch to its longest row and drops the last token; the project's scorer
# pads to its own batches): each logit is a sum over the hidden size (d products) through
# L layers, whose reduction order the matmul kernels choose by shape. A summed
# log-likelihood of c tokens moves by at most about c * (L + 1) * d * 2^-24 relative to the
# logits' scale (|logit| < 30 here): for the tiny model (d 128, L 4, c <= 2) under 1e-3;
# for SmolLM2 (d 576, L 30, c <= 2) under 5e-2. An item whose top two options are nearer
# than that may pick either.
def _check_agreement(rows, rec, ours, theirs, tol):
    import numpy as np
    flips = 0
    for r, a, b, e in zip(rows, ours, theirs, rec["examples"]):
        assert np.allclose(a, b, rtol=0, atol=tol), (r, a, b)
        pick_a, pick_b = int(np.argmax(a)), int(np.argmax(b))
        assert e["correct"] == float(pick_b == r["label"])
        if pick_a != pick_b:
            top = sorted(b)[-2:]
            assert top[1] - top[0] <= 2 * tol, (r, a, b)
            flips += 1
    acc_ours = np.mean([int(np.argmax(a)) == r["label"] for r, a in zip(rows, ours)])
    return flips, acc_ours


def test_lm_eval_multiple_choice_agrees_with_the_choice_scorer_on_the_tiny_base(tiny_base, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.chdir(ROOT)
    rows, rec, ours, theirs = _agreement(tiny_base, tmp_path)
    flips, acc = _check_agreement(rows, rec, ours, theirs, 1e-3)
    assert flips == 0 and acc == pytest.approx(rec["score"])


def test_lm_eval_multiple_choice_agrees_with_the_choice_scorer_on_smollm2(tmp_path_factory, tmp_path,
                                                                          monkeypatch):
    from test_smollm2 import _gguf
    from ordermerge.cli import main
    gguf = _gguf()

    def convert(out):
        assert main(["gguf", "--file", str(gguf), "--out", str(out)]) == 0
    ckpt = made_once(tmp_path_factory, "SmolLM2-135M-Instruct", convert)
    monkeypatch.chdir(ROOT)
    # 20 items: the agreement is per item (135M parameters score 80 options in about 20 s)
    rows, rec, ours, theirs = _agreement(ckpt, tmp_path, limit=20)
    assert len(rows) == rec["n"] == 20
    flips, acc = _check_agreement(rows, rec, ours, theirs, 5e-2)
    assert flips <= 1 and abs(acc - rec["score"]) <= 1 / len(rows)


def test_the_preflight_refuses_a_batch_that_cannot_fit(tmp_path, monkeypatch):
    """config/paper.yaml's benchmarks fit an H200 at batch 32; at 4,096 sequences of GSM8K's
    5-shot contexts the KV cache alone is over 2 TB, named before any job."""
    from ordermerge.workflow.config import load
    from ordermerge.workflow.plan import Plan
    monkeypatch.chdir(ROOT)
    assert Plan(load(ROOT / "config" / "paper.yaml")).preflight() == []
    f = tmp_path / "big.yaml"
    f.write_text("general_eval: {batch_size: 4096}\n")
    errors = Plan(load(ROOT / "config" / "paper.yaml", f)).preflight()
    assert any(e.startswith("general_eval of llama-2-7b on gsm8k needs about ") and
               "over resources.evaluate.gpu_mem_gb = 139: lower general_eval.batch_size" in e
               for e in errors), errors


def test_a_vllm_backend_without_vllm_is_named_before_any_job(tmp_path, monkeypatch):
    """general_eval.backend vllm on a machine without the vLLM environment: the config check
    names the key (what tasks.<t>.evaluate.backend vllm gets too), before any job."""
    from ordermerge.evaluate import vllm_env
    from ordermerge.workflow.config import environment_errors, load
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(vllm_env, "find_worker_python", lambda: (None, "no vLLM here"))
    f = tmp_path / "v.yaml"
    f.write_text("general_eval: {backend: vllm}\n")
    cfg = load(f)
    assert cfg["general_eval"]["backend"] == "vllm"
    assert environment_errors(cfg) == ["config key general_eval.backend: vllm generates the "
                                       "general benchmarks, but no vLLM here"]
    assert environment_errors(load()) == []
