"""The diagonal Fisher information of a checkpoint, for Fisher merging (merge/fisher.py).

    F = (1/n) sum over rows r of (d log p(y_r | x_r; theta) / d theta)^2

the empirical Fisher of the row's log-likelihood under the task's training objective
(objectives.py: a decoder's summed target-token log-likelihood, an encoder's label
cross-entropy), over the first n rows of the training split, in file order: the same
rows for every run, so that the runs' Fishers differ only by their weights. One backward
pass per row, in float32 on the CPU (bfloat16 gradients would round F), dropout off.

Written as a checkpoint directory (model.safetensors, float32) holding one tensor per float
tensor of the model's own checkpoint, under the same names: the merge engine reads it
beside the sub-model. A float tensor that is not a parameter gets zeros.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .utils import InputError


def diagonal_fisher(model, objective, rows: list[dict]) -> dict[str, torch.Tensor]:
    """{parameter name: mean squared gradient} over `rows`, one backward pass per row."""
    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()}
    device = next(model.parameters()).device
    for row in rows:
        model.zero_grad(set_to_none=True)
        batch = {k: v.to(device) for k, v in objective.collate([objective.encode(row)]).items()}
        total, _ = objective.losses(model, batch)
        total[0].backward()
        for n, p in params.items():
            if p.grad is not None:
                acc[n].add_(p.grad.detach().to(torch.float32).square())
    model.zero_grad(set_to_none=True)
    return {n: t.div_(len(rows)).cpu() for n, t in acc.items()}


def model_over_rows(task, model_path, train: list[dict], n: int, max_length: int, what: str):
    """What a per-run statistic over the first `n` training rows needs: the checkpoint
    loaded for the task in float32 (a LoRA run folded into its base; on the GPU where there
    is one), its objective, the rows, and its stored tensors (name -> info). `what` names
    the statistic in errors (the method's rows setting asks for the rows)."""
    from .checkpoints import load_for_task
    from .merge.lora_runs import folded
    from .merge.st_io import Checkpoint
    from .objectives import objective_for
    if n > len(train):
        raise InputError(f"{what}: {n} rows asked for (the method's rows setting), but the "
                         f"training split has {len(train)}")
    with folded(model_path) as dense:
        model, tokenizer = load_for_task(task, dense, dtype=torch.float32)
        stored = Checkpoint(dense).tensors
    if torch.cuda.is_available():  # float32 on the GPU: a 7B and its gradients, 56 GB
        model = model.to("cuda")
    return model, objective_for(task, tokenizer, max_length), train[:n], stored


def fisher_of_checkpoint(task, model_path: str | os.PathLike, train: list[dict], n: int,
                         max_length: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The Fisher of the checkpoint `model_path` over the first `n` of `train`, named as its
    stored float tensors, and the ids of the rows used. A LoRA run: the Fisher of its folded
    model, every weight (the merge reads the layers the runs adapt)."""
    model, objective, rows, stored = model_over_rows(task, model_path, train, n, max_length, "diagonal_fisher")
    fisher = diagonal_fisher(model, objective, rows)
    out = {}
    for name, info in sorted(stored.items()):
        if info.is_float:
            out[name] = fisher.get(name, torch.zeros(tuple(info.shape), dtype=torch.float32))
            if tuple(out[name].shape) != tuple(info.shape):
                raise InputError(f"fisher: parameter {name!r} of {model_path} is "
                                 f"{list(out[name].shape)}, stored {list(info.shape)}")
    return out, [r["id"] for r in rows]


def run_meta(task, model_path, train, rows: int, ids: list[str], **extra) -> dict:
    """fisher.json / gram.json: what a per-run statistic is of. The merge checks
    `model_sha256` (the sha256 of the checkpoint's weight files) against the sub-model it is
    given with, and `rows` against the method's."""
    from .merge.lora_runs import weight_files
    from .provenance import file_hashes
    return {"model": str(model_path), "task": task.name, "rows": rows, "row_ids": ids,
            "train": str(train), **extra,
            "model_sha256": file_hashes(model_path, [f.name for f in weight_files(model_path)])}



def write_run_data(out_dir: Path, tensors: dict[str, torch.Tensor], meta: dict,
                   meta_name: str = "fisher.json") -> None:
    """`out_dir` (an existing, empty directory): model.safetensors and the meta file."""
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "model.safetensors"))
    (out_dir / meta_name).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")

