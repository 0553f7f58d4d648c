"""Prepare a task's train / validation / test rows with stable ids."""
from __future__ import annotations

import random
from pathlib import Path

from ..utils import derive_seed
from .registry import SPLITS, DatasetUnavailable, check_rows, get_task
from .sources import local_files, read_split


def _with_ids(task: str, split: str, rows: list[dict], indices: list[int]) -> list[dict]:
    """Our id first: a source's own id field (SQuAD's) is kept as source_id."""
    out = []
    for i, row in zip(indices, rows):
        row = dict(row)
        if "id" in row:
            row["source_id"] = row.pop("id")
        out.append({"id": f"{task}:{split}:{i:06d}", **row})
    return out


def _distinct(task, n: int, seed: int, split: str, exclude: set[str], config_key: str) -> list[dict]:
    """n toy rows with distinct prompts, none in `exclude` (so test never repeats train)."""
    rows, seen = [], set(exclude)
    for attempt in range(8):
        for row in task.toy(4 * n, derive_seed(seed, task.name, "toy", split, attempt), split):
            p = task.prompt(row)
            if p not in seen:
                seen.add(p)
                rows.append(row)
                if len(rows) == n:
                    return rows
    raise ValueError(f"{config_key}: the toy generator of {task.name!r} gives only {len(rows)} "
                     f"distinct {split} rows, {n} asked for")


def _local_copy(task, split: str, cfg: dict, config_key: str) -> tuple[str | None, str]:
    """The local copy to read a split from, and its config key. The test set of a task whose
    test source is another dataset (MATH, HumanEval, AlpacaEval, GSM8K for gsm8k_rft) comes
    from test_path; else from path when path holds its files; else from where the source
    itself says (a packaged copy, or the hub)."""
    if split == "test" and cfg.get("test_path"):
        return cfg["test_path"], f"{config_key}.test_path"
    path = cfg.get("path")
    if split == "test" and path and task.test[0].repo != task.train[0].repo:
        source, src_split = task.test
        if not local_files(Path(path), source.files[src_split]):
            return None, f"{config_key}.test_path"
    return path, f"{config_key}.path"


def prepare(task_name: str, cfg: dict, seed: int, config_key: str,
            origin: dict | None = None) -> dict[str, list[dict]]:
    """Rows per split. `cfg` is the task's config block; `config_key` names it in errors.
    `origin`, when given, receives per source split where its rows came from (each local
    file's sha256, or the hub repository and commit; for toy rows the generator and seed).

    Ids name the row's index in its source split (``gsm8k:train:000123``), so
    they stay the same when the sizes of other splits change. Validation rows
    are a seeded sample of the source's train split, removed from train.
    """
    task = get_task(task_name)
    n_val = cfg["n_validation"]
    if cfg["source"] == "toy":
        if cfg.get("n_train") is None or cfg.get("n_test") is None:
            raise ValueError(f"{config_key}: a toy source needs n_train and n_test")
        train = _distinct(task, cfg["n_train"] + n_val, seed, "train", set(), config_key)
        test = _distinct(task, cfg["n_test"], seed, "test", {task.prompt(r) for r in train},
                         config_key)
        source = {"train": train, "test": test}
        names = {"train": "train", "test": "test"}
        if origin is not None:
            origin.update({s: {"toy": f"ordermerge.data toy generator of {task_name}",
                               "seed": seed} for s in names})
    elif cfg["source"] == "hf":
        source, names, read_from = {}, {}, {}
        for split in ("train", "test"):
            src, src_split = task.source_of(split)
            path, key = _local_copy(task, split, cfg, config_key)
            seen: dict = {}
            source[split] = read_split(src, src_split, path, key, task.paper,
                                       revision=cfg.get("revision"), seen=seen)
            if origin is not None:
                origin[split] = seen
            names[split] = src_split
            read_from[split] = (key, path, list(seen.get("files", {})) or [src.repo])
        for split, rows in source.items():  # an empty file is named, not n_validation
            if not rows:
                key, path, files = read_from[split]
                raise DatasetUnavailable(
                    f"{key} = {path!r}: split {names[split]!r} has no rows ("
                    f"{', '.join(files)} {'is' if len(files) == 1 else 'are'} empty)")
    else:
        raise ValueError(f"{config_key}.source: unknown source {cfg['source']!r} (toy, hf)")
    for split, rows in source.items():
        check_rows(task, rows, f"{task_name} source split {names[split]!r}", split)

    train_idx = list(range(len(source["train"])))
    if n_val >= len(train_idx):
        raise DatasetUnavailable(f"{config_key}.n_validation = {n_val} leaves no training rows "
                                 f"(source train split has {len(train_idx)})")
    val_idx = sorted(random.Random(derive_seed(seed, task_name, "validation")).sample(train_idx, n_val))
    val_set = set(val_idx)
    # a row repeated in the source would put its validation copy back into train: train
    # keeps no row whose prompt a validation row has (the number left out is recorded)
    val_prompts = {task.prompt(source["train"][i]) for i in val_idx}
    repeats = {i for i in train_idx
               if i not in val_set and task.prompt(source["train"][i]) in val_prompts}
    train_idx = [i for i in train_idx if i not in val_set and i not in repeats]
    if repeats and origin is not None:
        origin.setdefault("train", {})["train_rows_repeating_validation_left_out"] = len(repeats)
    test_idx = list(range(len(source["test"])))
    limits = {"train": cfg.get("n_train"), "test": cfg.get("n_test")}
    out = {}
    for split, src, idx in (("train", "train", train_idx), ("validation", "train", val_idx),
                            ("test", "test", test_idx)):
        if limits.get(split) is not None:
            idx = idx[:limits[split]]
        out[split] = _with_ids(task_name, names[src], [source[src][i] for i in idx], idx)
    assert tuple(out) == SPLITS
    return out
