"""The arguments of one SFT run, shared by `ordermerge train` and the workflow's sft script.

Its own module, importing nothing heavy: `ordermerge train --help` and argument errors
stay instant, and editing the command line (cli.py) does not rerun the workflow's
training jobs, whose code inputs include this file.
"""
from __future__ import annotations

from pathlib import Path


def train_arguments(p) -> None:
    """The arguments of `ordermerge train` and of the workflow's sft script."""
    p.add_argument("--task", required=True, help="task name (ordermerge.data.registry)")
    p.add_argument("--base", required=True,
                   help="base model: a local directory (e.g. the tiny built base) or a Hugging Face id")
    p.add_argument("--data-dir", required=True, type=Path,
                   help="directory with the task's train.jsonl and validation.jsonl")
    p.add_argument("--order", required=True, type=Path,
                   help='order file: {"epochs": [[row ids], ...], "seed": s, "run": r}')
    # kept as given (Path("") would read as "."): an empty path is refused, not the cwd
    p.add_argument("--out-dir", required=True,
                   help="where the run writes: a new or empty directory, or an earlier run's "
                        "(resumed or rerun); nothing else is written into")
