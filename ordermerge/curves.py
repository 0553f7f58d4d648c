"""Validation loss at every saved point of K SFT runs, or of their merge at each point (the
data of Figure 4): the K runs' checkpoints scored as ``scoring.score_rows`` scores any model,
the merges built with the merge engine."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from .scoring import score_rows
from .utils import InputError


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

    from .merge.methods import get, parse_method_id
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
