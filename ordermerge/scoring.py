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

from .utils import InputError



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
        from .encoder import head_class
        return head_class(task).from_pretrained(path, dtype=dtype), AutoTokenizer.from_pretrained(path)
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


def checkpoint_plan(run: Path) -> list[tuple[int, str]]:
    """(optimizer steps done, checkpoint directory name) of an SFT run, from its run.json."""
    import json
    summary = json.loads((Path(run) / "run.json").read_text())
    return sorted((int(n), name) for n, names in summary["checkpoints"].items() for name in names)


def curve(task, rows: list[dict], runs: list[Path], cfg: dict, method_id: str | None = None,
          base: Path | None = None, scratch: Path = Path("."), log=print):
    """Validation loss on `rows` at every saved point of the K `runs` (which must share one
    checkpoint plan): each run's checkpoint, or with `method_id` the merge of the runs'
    checkpoints at that point (built in a temporary directory under `scratch`). Returns the
    points (step, checkpoint, model, loss) and the files read."""
    import tempfile

    from .merge import get, parse_method_id
    from .merge.engine import merge
    runs = [Path(r) for r in runs]
    plan = checkpoint_plan(runs[0])
    for r in runs[1:]:
        if checkpoint_plan(r) != plan:
            raise InputError(f"{r}: checkpoints {checkpoint_plan(r)} differ from {runs[0]}'s {plan}")

    def val_loss(model_dir) -> float:
        losses = score_rows(task, model_dir, rows, max_length=cfg["max_length"],
                            batch_size=cfg["batch_size"])
        return sum(losses.values()) / len(losses)

    if method_id is not None:
        method, settings = parse_method_id(method_id)
        Path(scratch).mkdir(parents=True, exist_ok=True)
    out = []
    for step, name in plan:
        ckpts = [r / name for r in runs]
        if method_id is None:
            out += [(step, name, f"run{i}", val_loss(c)) for i, c in enumerate(ckpts)]
        else:
            with tempfile.TemporaryDirectory(dir=scratch, prefix=".curve-") as tmp:
                merged = Path(tmp) / "merged"
                merge(method, ckpts, merged, base=base if get(method).needs_base else None,
                      weights=cfg.get("weights"), **settings)
                out.append((step, name, method_id, val_loss(merged)))
        log(f"{name} (step {step}): " + ", ".join(f"{m} {v:.4f}" for s, _, m, v in out if s == step))
    used = [r / name for r in runs for _, name in plan] + [r / "run.json" for r in runs]
    return out, used


def write_curve(path: str | os.PathLike, points) -> None:
    """step,checkpoint,model,validation_loss rows (six decimals), atomically."""
    from .utils import atomic_file
    with atomic_file(path, "w") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["step", "checkpoint", "model", "validation_loss"])
        for step, name, m, v in points:
            w.writerow([step, name, m, f"{v:.6f}"])
