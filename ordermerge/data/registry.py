"""The task registry: a task is data, not a code path.

An entry names the row schema, how a row becomes a prompt and a training
target, how the gold answer is read, which evaluator scores it, and where its
rows come from. Where rows come from is chosen per task in the config
(``source``): ``toy`` (a deterministic generator of the embedded suite) or
``hf`` (the real dataset, from the Hugging Face Hub or a local copy).
Adding a dataset is adding an entry to `TASKS`.
"""
from __future__ import annotations

import glob
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import toy
from ..utils import read_jsonl

SPLITS = ("train", "validation", "test")


class DatasetUnavailable(RuntimeError):
    """The real dataset is neither on disk nor reachable."""


@dataclass(frozen=True)
class Task:
    name: str
    fields: tuple[str, ...]
    prompt: Callable[[dict], str]
    target: Callable[[dict], str]
    gold: Callable[[dict], str]
    evaluator: str
    metric: str
    hub_id: str
    hub_config: str | None
    hub_splits: dict[str, str]
    toy: Callable[[int, int], list[dict]]
    defaults: dict = field(default_factory=dict)


def _gsm8k_gold(row: dict) -> str:
    return row["answer"].rsplit("####", 1)[1].strip().replace(",", "")


TASKS: dict[str, Task] = {
    "gsm8k": Task(
        name="gsm8k",
        fields=("question", "answer"),
        prompt=lambda r: f"Question: {r['question']}\nAnswer:",
        target=lambda r: f" {r['answer']}",
        gold=_gsm8k_gold,
        evaluator="gsm8k",
        metric="accuracy",
        hub_id="openai/gsm8k",
        hub_config="main",
        hub_splits={"train": "train", "test": "test"},
        toy=toy.arithmetic_problems,
    ),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(TASKS)}") from None


def check_rows(task: Task, rows: list[dict], origin: str) -> None:
    for i, row in enumerate(rows):
        missing = [f for f in task.fields if f not in row]
        if missing:
            raise ValueError(f"{origin}: row {i} lacks field(s) {missing} required by task "
                             f"{task.name!r} (has {sorted(row)})")
        try:
            task.gold(row)
        except Exception as e:
            raise ValueError(f"{origin}: row {i} has no readable gold answer for task "
                             f"{task.name!r}: {e!r}") from None


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _local_split(root: Path, split: str) -> list[dict]:
    """Rows of `split` from a local copy in the hub's layouts: jsonl or parquet."""
    for pattern in (f"{split}.jsonl", f"*/{split}.jsonl", f"{split}-*.parquet", f"*/{split}-*.parquet",
                    f"data/{split}-*.parquet"):
        files = sorted(glob.glob(str(root / pattern)))
        if files:
            if files[0].endswith(".jsonl"):
                return read_jsonl(files[0])
            import pandas as pd
            return pd.concat([pd.read_parquet(f) for f in files]).to_dict("records")
    raise DatasetUnavailable(f"local copy {root} has no {split!r} split ({split}.jsonl or "
                             f"{split}-*.parquet, optionally one folder down)")


def load_source_split(task: Task, split: str, path: str | None, config_key: str) -> list[dict]:
    """Rows of one of the real dataset's own splits, from `path` or the hub."""
    if path:
        root = Path(path)
        if not root.exists():
            raise DatasetUnavailable(f"{config_key} = {path!r}: no such file or directory")
        return _local_split(root, split)
    if not hub_reachable():
        raise DatasetUnavailable(
            f"dataset {task.hub_id} (task {task.name!r}) is not reachable: offline or no "
            f"network. Download it elsewhere and set {config_key} to the local copy.")
    import datasets
    return datasets.load_dataset(task.hub_id, task.hub_config, split=split).to_list()
