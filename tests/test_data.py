"""Prepared splits: toy rows, the real GSM8K loader on local files in the hub's layout."""
import pandas as pd
import pytest

from ordermerge.data.prepare import prepare
from ordermerge.data.registry import DatasetUnavailable, get_task


def gsm8k_rows(n, offset=0):
    return [{"question": f"Q{i}: what is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1:,}"}
            for i in range(offset, offset + n)]


def test_toy_splits_are_disjoint_seeded_and_have_stable_ids():
    cfg = {"source": "toy", "n_train": 50, "n_validation": 10, "n_test": 20}
    a = prepare("gsm8k", cfg, 0, "tasks.gsm8k.data")
    assert {k: len(v) for k, v in a.items()} == {"train": 50, "validation": 10, "test": 20}
    questions = {s: {r["question"] for r in rows} for s, rows in a.items()}
    assert not questions["test"] & (questions["train"] | questions["validation"])
    assert a == prepare("gsm8k", cfg, 0, "tasks.gsm8k.data")
    assert a != prepare("gsm8k", cfg, 1, "tasks.gsm8k.data")
    assert a["train"][0]["id"].startswith("gsm8k:train:")
    task = get_task("gsm8k")
    assert all(task.gold(r).lstrip("-").isdigit() for r in a["test"])


def test_gsm8k_from_a_local_copy_in_the_hub_parquet_layout(tmp_path):
    (tmp_path / "main").mkdir()
    pd.DataFrame(gsm8k_rows(30)).to_parquet(tmp_path / "main" / "train-00000-of-00001.parquet")
    pd.DataFrame(gsm8k_rows(12, 100)).to_parquet(tmp_path / "main" / "test-00000-of-00001.parquet")
    cfg = {"source": "hf", "path": str(tmp_path), "n_train": None, "n_validation": 5, "n_test": None}
    out = prepare("gsm8k", cfg, 0, "tasks.gsm8k.data")
    assert {k: len(v) for k, v in out.items()} == {"train": 25, "validation": 5, "test": 12}
    # ids name the row's index in its source split, validation rows included
    assert out["test"][3]["id"] == "gsm8k:test:000003"
    assert out["test"][3]["question"].startswith("Q103")
    train_idx = {int(r["id"].rsplit(":", 1)[1]) for r in out["train"] + out["validation"]}
    assert train_idx == set(range(30))
    assert get_task("gsm8k").gold(out["test"][0]) == "101"


def test_gsm8k_from_local_jsonl(tmp_path):
    import json
    for split, rows in (("train", gsm8k_rows(10)), ("test", gsm8k_rows(4, 50))):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"source": "hf", "path": str(tmp_path), "n_train": 6, "n_validation": 2, "n_test": 3}
    out = prepare("gsm8k", cfg, 0, "tasks.gsm8k.data")
    assert {k: len(v) for k, v in out.items()} == {"train": 6, "validation": 2, "test": 3}


def test_offline_without_a_local_copy_fails_at_once_naming_the_key(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = {"source": "hf", "path": None, "n_train": None, "n_validation": 5, "n_test": None}
    with pytest.raises(DatasetUnavailable, match=r"openai/gsm8k.*tasks\.gsm8k\.data\.path"):
        prepare("gsm8k", cfg, 0, "tasks.gsm8k.data")


def test_bad_rows_and_paths_are_named(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"question": "q"}\n')
    (tmp_path / "test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    cfg = {"source": "hf", "path": str(tmp_path), "n_train": None, "n_validation": 1, "n_test": None}
    with pytest.raises(ValueError, match=r"row 0 lacks field\(s\) \['answer'\]"):
        prepare("gsm8k", cfg, 0, "tasks.gsm8k.data")
    cfg["path"] = str(tmp_path / "nowhere")
    with pytest.raises(DatasetUnavailable, match="tasks.gsm8k.data.path"):
        prepare("gsm8k", cfg, 0, "tasks.gsm8k.data")


def test_the_source_of_every_row_is_recorded(tmp_path):
    import hashlib
    (tmp_path / "main").mkdir()
    f = tmp_path / "main" / "train-00000-of-00001.parquet"
    pd.DataFrame(gsm8k_rows(30)).to_parquet(f)
    pd.DataFrame(gsm8k_rows(12, 100)).to_parquet(tmp_path / "main" / "test-00000-of-00001.parquet")
    cfg = {"source": "hf", "path": str(tmp_path), "n_train": None, "n_validation": 5, "n_test": None}
    origin = {}
    prepare("gsm8k", cfg, 0, "tasks.gsm8k.data", origin=origin)
    assert origin["train"] == {"repo": "openai/gsm8k", "split": "train",
                               "files": {str(f): hashlib.sha256(f.read_bytes()).hexdigest()}}
    assert list(origin["test"]["files"]) == [str(tmp_path / "main" / "test-00000-of-00001.parquet")]
    toy = {}
    prepare("gsm8k", {"source": "toy", "n_train": 5, "n_validation": 2, "n_test": 3}, 7,
            "tasks.gsm8k.data", origin=toy)
    assert toy["train"]["seed"] == 7 and "toy" in toy["train"]["toy"]


def test_the_hub_revision_is_resolved_to_a_commit_and_loaded_at_it(monkeypatch):
    """The hub path (no network here): the configured revision is resolved with HfApi first,
    then datasets loads the split's hub-layout files at that exact commit."""
    import datasets
    import huggingface_hub

    from ordermerge.data import sources

    calls = {}

    class Api:
        def dataset_info(self, repo, revision):
            calls["info"] = (repo, revision)
            return type("Info", (), {"sha": "c0ffee" * 6 + "abcd"})()

    def load_dataset(repo, revision, split, data_files):
        calls["load"] = (repo, revision, split, data_files)
        return datasets.Dataset.from_list(gsm8k_rows(8 if data_files["train"][0].startswith("main/train") else 3))

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(sources, "hub_reachable", lambda: True)
    cfg = {"source": "hf", "path": None, "revision": "v1.0", "n_train": None, "n_validation": 2,
           "n_test": None}
    origin = {}
    out = prepare("gsm8k", cfg, 0, "tasks.gsm8k.data", origin=origin)
    assert calls["info"] == ("openai/gsm8k", "v1.0")
    assert calls["load"][:2] == ("openai/gsm8k", "c0ffee" * 6 + "abcd")
    assert origin["test"] == {"repo": "openai/gsm8k", "split": "test", "revision": "v1.0",
                              "commit": "c0ffee" * 6 + "abcd"}
    assert {k: len(v) for k, v in out.items()} == {"train": 6, "validation": 2, "test": 3}
