"""Per-sample losses of a model on a task's rows: the code of SFT's validation pass
(`objectives.sample_losses`), for any checkpoint (a sub-model, a merge, a step checkpoint).

A sample's loss is its mean loss term (response tokens for decoders; the label or span
for encoders), in eval mode, batched as SFT batches them. Checkpoints are loaded in
float32 (bf16 weights widen exactly), so a score does not depend on the device's
autocast choices.
"""
from __future__ import annotations

import csv
import os


def score_rows(task, model_dir, rows: list[dict], *, max_length: int, batch_size: int) -> dict[str, float]:
    """Load `model_dir` and return each row's loss (rows in their given order)."""
    from .checkpoints import load_for_task
    from .objectives import objective_for, sample_losses
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
