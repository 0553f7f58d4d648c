"""Prepare a task's train / validation / test rows with stable ids."""
from __future__ import annotations

import random

from ..utils import derive_seed
from .registry import SPLITS, DatasetUnavailable, check_rows, get_task, load_source_split


def _with_ids(task: str, split: str, rows: list[dict], indices: list[int]) -> list[dict]:
    return [{"id": f"{task}:{split}:{i:06d}", **row} for i, row in zip(indices, rows)]


def prepare(task_name: str, cfg: dict, seed: int, config_key: str) -> dict[str, list[dict]]:
    """Rows per split. `cfg` is the task's config block; `config_key` names it in errors.

    Ids name the row's index in its source split (``gsm8k:train:000123``), so
    they stay the same when the sizes of other splits change. Validation rows
    are a seeded sample of the source's train split, removed from train.
    """
    task = get_task(task_name)
    n_val = cfg["n_validation"]
    if cfg["source"] == "toy":
        want = cfg["n_train"] + n_val + cfg["n_test"]
        rows, seen = [], set()
        # generate extra and drop repeated questions, so the test split is disjoint from train
        for row in task.toy(4 * want, derive_seed(seed, task_name, "toy")):
            if row["question"] not in seen:
                seen.add(row["question"])
                rows.append(row)
        if len(rows) < want:
            raise ValueError(f"{config_key}: the toy generator gives only {len(rows)} distinct "
                             f"rows, {want} asked for")
        source = {"train": rows[:cfg["n_train"] + n_val], "test": rows[cfg["n_train"] + n_val:want]}
    elif cfg["source"] == "hf":
        source = {}
        for split in ("train", "test"):
            source[split] = load_source_split(task, task.hub_splits[split], cfg.get("path"),
                                              f"{config_key}.path")
    else:
        raise ValueError(f"{config_key}.source: unknown source {cfg['source']!r} (toy, hf)")
    for split, rows in source.items():
        check_rows(task, rows, f"{task_name} source split {split!r}")

    train_idx = list(range(len(source["train"])))
    if n_val >= len(train_idx):
        raise DatasetUnavailable(f"{config_key}.n_validation = {n_val} leaves no training rows "
                                 f"(source train split has {len(train_idx)})")
    val_idx = sorted(random.Random(derive_seed(seed, task_name, "validation")).sample(train_idx, n_val))
    val_set = set(val_idx)
    train_idx = [i for i in train_idx if i not in val_set]
    test_idx = list(range(len(source["test"])))
    limits = {"train": cfg.get("n_train"), "test": cfg.get("n_test")}
    out = {}
    for split, src, idx in (("train", "train", train_idx), ("validation", "train", val_idx),
                            ("test", "test", test_idx)):
        if limits.get(split) is not None:
            idx = idx[:limits[split]]
        out[split] = _with_ids(task_name, src, [source[src][i] for i in idx], idx)
    assert tuple(out) == SPLITS
    return out
