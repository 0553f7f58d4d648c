"""The tiny suite's pretraining corpus: plain text plus task-formatted rows, decontaminated.

A real base model has seen text like its fine-tuning tasks before SFT (Llama-2
solves some GSM8K problems before any SFT). The tiny base gets the same: a
fraction of its corpus is rows from each task's toy generator (a seed of its
own), in the task's prompt + target format on one line. Any row whose prompt
is a validation or test prompt is dropped, so evaluation stays held out.
"""
from __future__ import annotations

import random

from ..utils import derive_seed
from . import toy
from .task import Task


def pretraining_corpus(tasks: list[Task], n_lines: int, seed: int, task_fraction: float,
                       held_out_prompts: set[str]) -> list[str]:
    n_task = int(round(n_lines * task_fraction)) if tasks else 0
    lines = toy.plain_text(n_lines - n_task, derive_seed(seed, "corpus", "plain"))
    for i, task in enumerate(tasks):
        want = n_task // len(tasks) + (1 if i < n_task % len(tasks) else 0)
        kept: list[str] = []
        attempt = 0
        while len(kept) < want:
            if attempt == 8:
                raise ValueError(f"task {task.name}: its toy generator gives fewer than {want} "
                                 f"rows outside the held-out splits")
            rows = task.toy(2 * want, derive_seed(seed, "corpus", task.name, attempt))
            kept += [(task.prompt(r) + task.target(r)).replace("\n", " ") for r in rows
                     if task.prompt(r) not in held_out_prompts][: want - len(kept)]
            attempt += 1
        lines += kept
    random.Random(derive_seed(seed, "corpus", "shuffle")).shuffle(lines)
    return lines


def tiny_corpus(data_dirs: list, cfg: dict) -> tuple[list[str], list[str], list]:
    """The tiny suite's pretraining corpus from every task's prepared data (results/data/<task>/,
    named by the task), with the validation and test prompts held out: (corpus lines, the
    tokenizer's training texts: the tasks' training rows and the corpus, the files read)."""
    from pathlib import Path

    from ..utils import read_jsonl
    from .registry import get_task
    data_dirs = [Path(d) for d in data_dirs]
    tasks = [get_task(d.name) for d in data_dirs]
    held_out, texts, inputs = set(), [], []
    for task, d in zip(tasks, data_dirs):
        for split in ("validation", "test"):
            held_out |= {task.prompt(r) for r in read_jsonl(d / f"{split}.jsonl")}
        texts += [task.prompt(r) + task.target(r) for r in read_jsonl(d / "train.jsonl")]
        inputs += [d / f"{split}.jsonl" for split in ("train", "validation", "test")]
    lines = pretraining_corpus(tasks, cfg["corpus_lines"], derive_seed(cfg["seed"], "corpus"),
                               cfg["corpus_task_fraction"], held_out)
    return lines, texts + lines, inputs
