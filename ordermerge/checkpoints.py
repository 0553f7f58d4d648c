"""Loading a task's checkpoint for scoring and evaluation: the decoder as a causal LM, an
encoder with the task's head. Its own module so that evaluation and scoring depend on this
and not on each other."""
from __future__ import annotations

import os
from pathlib import Path


def _require_checkpoint(path: str | os.PathLike) -> None:
    from .merge.lora_runs import is_adapter_dir
    if not Path(path, "config.json").is_file() and not is_adapter_dir(path):
        raise FileNotFoundError(f"{path}: not a checkpoint directory (no config.json)")


def tokenizer_of(path: str | os.PathLike):
    """The tokenizer of the checkpoint directory `path` (FileNotFoundError if it is none)."""
    from transformers import AutoTokenizer
    _require_checkpoint(path)
    return AutoTokenizer.from_pretrained(path)


def load_for_task(task, path: str | os.PathLike, dtype=None):
    """(model, tokenizer) of a checkpoint of `task`'s family, in float32 unless `dtype`: a
    causal LM (a LoRA run's: its update folded into the base, lora_runs.folded), or the
    encoder with the task's head."""
    import torch
    dtype = dtype or torch.float32
    if task.family == "encoder":
        from .encoder import head_class
        tokenizer = tokenizer_of(path)
        return head_class(task).from_pretrained(path, dtype=dtype), tokenizer
    _require_checkpoint(path)
    from .merge.lora_runs import folded
    from .models import load_model
    with folded(path) as dense:  # it carries the run's own tokenizer files
        return load_model(dense, dtype=dtype)
