"""A task is data, not a code path.

An entry names its model family, where its train and test rows come from
(`Source`, in the source's own files and schema), how a row becomes a prompt
and a training target, the gold answer, the candidate options of choice and
classification tasks, which evaluator scores it with which metric, its tiny
counterpart, the paper's hyperparameters for it and whether the paper's Table 2 has
it. Adding a dataset is one entry here (plus its toy generator, toy_tasks.py). Rows come, per task
and config (``data.source``), from the toy generator or the real dataset (a
local copy in the source's layout, or the hub). The 15 entries are in
tasks.py; registry.py looks them up by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .sources import Source

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Task:
    name: str
    family: str  # "decoder" (causal LM, SFT on prompt -> target) or "encoder" (BERT family)
    paper: str  # the dataset as the paper names it
    # our split -> (its source, the source's split); validation rows come out of train
    train: tuple[Source, str]
    test: tuple[Source, str]
    fields: dict[str, tuple[str, ...]]  # our split -> fields every row must have
    prompt: Callable[[dict], str]
    target: Callable[[dict], str]
    gold: Callable[[dict], object]  # of a test row: a string, a list of strings, or an index
    evaluator: str
    metric: str
    toy: Callable[..., list[dict]]  # (n, seed, split) -> rows in the source's schema
    options: Callable[[dict], list[str]] | None = None  # candidates of a choice task
    # the paper's settings (Appendix B.4, Tables 5-6): max_length, lr, batch_size (global rows
    # per step), resample_rounds (the n of selection + resample; 1 when absent); every run
    # is hparams.EPOCHS epochs. config/paper.yaml takes them (a test checks it)
    hparams: dict | None = None
    table2: bool = False  # one of Table 2's datasets (table2.tasks defaults to these)
    # an encoder task's input: one text, or a pair (text, None when single)
    segments: Callable[[dict], tuple[str, str | None]] | None = None

    @property
    def span(self) -> bool:
        """An extractive QA task: an encoder with a span head."""
        return self.evaluator == "encoder_span"

    def encoder_text(self, row: dict) -> str:
        """An encoder task's input as one line of plain text (its pretraining text)."""
        return " ".join(x for x in self.segments(row) if x is not None)

    def source_of(self, split: str) -> tuple[Source, str]:
        return self.test if split == "test" else self.train


def check_rows(task: Task, rows: list[dict], origin: str, split: str = "train") -> None:
    """Every row has the split's fields; test rows have a readable gold answer."""
    want = task.fields["test" if split == "test" else "train"]
    for i, row in enumerate(rows):
        missing = [f for f in want if f not in row]
        if missing:
            raise ValueError(f"{origin}: row {i} lacks field(s) {missing} required by task "
                             f"{task.name!r} (has {sorted(row)})")
        null = [f for f in want if row[f] is None]  # a prompt of "Question: None" otherwise
        if null:
            raise ValueError(f"{origin}: row {i} has null field(s) {null} required by task "
                             f"{task.name!r}")
        try:
            task.prompt(row)
            if split == "test":
                task.gold(row)
            else:
                task.target(row)
        except Exception as e:
            why = str(e) if isinstance(e, ValueError) and str(e) else repr(e)
            raise ValueError(f"{origin}: row {i} cannot be read by task {task.name!r}: {why}") from None
