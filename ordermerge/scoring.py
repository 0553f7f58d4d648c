"""Per-sample losses of a model on a task's rows: the code of SFT's closing pass
(`SFTRun.losses`), for any checkpoint (a sub-model, a merge, a step checkpoint).

A sample's loss is its mean loss term (response tokens for decoders; the label or span
for encoders), in eval mode, batched as SFT batches them. Checkpoints are loaded in
float32 (bf16 weights widen exactly), so a score does not depend on the device's
autocast choices.
"""
from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path



def sample_losses(model, objective, examples: dict[str, dict], ids, batch_size: int,
                  device="cpu", autocast=contextlib.nullcontext) -> dict[str, float]:
    """{id: mean loss term} for `ids` (encoded `examples`), `batch_size` rows at a time."""
    import torch
    out = {}
    ids = list(ids)
    with torch.no_grad():
        for m in range(0, len(ids), batch_size):
            rows = ids[m:m + batch_size]
            batch = objective.collate([examples[i] for i in rows])
            batch = {key: v.to(device) for key, v in batch.items()}
            with autocast():
                total, count = objective.losses(model, batch)
            out.update({i: t / max(c, 1) for i, t, c in zip(rows, total.tolist(), count.tolist())})
    return out


def load_for_task(task, path: str | os.PathLike, dtype=None):
    """(model, tokenizer) of a checkpoint of `task`'s family, in float32 unless `dtype`: a
    causal LM, or the encoder with the task's head."""
    import torch
    from transformers import AutoTokenizer
    dtype = dtype or torch.float32
    if not Path(path, "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint directory (no config.json)")
    if task.family == "encoder":
        from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
        cls = (AutoModelForQuestionAnswering if task.evaluator == "encoder_span"
               else AutoModelForSequenceClassification)
        return cls.from_pretrained(path, dtype=dtype), AutoTokenizer.from_pretrained(path)
    from .models import load_model
    return load_model(path, dtype=dtype)


def score_rows(task, model_dir, rows: list[dict], *, max_length: int, batch_size: int) -> dict[str, float]:
    """Load `model_dir` and return each row's loss (rows in their given order)."""
    from .objectives import objective_for
    model, tokenizer = load_for_task(task, model_dir)
    model.eval()
    obj = objective_for(task, tokenizer, max_length)
    examples = {r["id"]: obj.encode(r) for r in rows}
    return sample_losses(model, obj, examples, list(examples), batch_size)


def write_losses(path: str | os.PathLike, losses: dict[str, float]) -> None:
    """id,loss rows (six decimals, as samples.csv), atomically."""
    from .utils import atomic_file
    with atomic_file(path, "w") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "loss"])
        for i, v in losses.items():
            w.writerow([i, f"{v:.6f}"])


def read_losses(path: str | os.PathLike) -> dict[str, float]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and set(rows[0]) != {"id", "loss"}:
        raise ValueError(f"{path}: not a per-sample loss file (columns id, loss)")
    return {r["id"]: float(r["loss"]) for r in rows}
