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
