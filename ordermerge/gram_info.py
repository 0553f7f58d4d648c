"""The input Gram matrices of a checkpoint's linear layers, for RegMean (merge/regmean.py).

For every linear layer y = W x (nn.Linear, W stored [out, in]) whose weight is not tied to
another tensor:

    G = (1/T) sum over the T input tokens of the first n training rows of x x^T   [in, in]

the inputs the layer sees in a forward pass of each row (the task's training encoding,
objectives.py; dropout off; one row per pass, so no padding enters), accumulated in float64
and stored in float32. The same rows for every run, in file order: T is the same for every
run of one task, so the 1/T does not change RegMean's solution; it keeps the values of the
order of the activations' squares.

Written as a checkpoint directory (model.safetensors: one [in, in] float32 tensor per
linear weight, named as the weight; gram.json: what it was made from), read by the merge
engine beside the sub-model (merge/rundata.py).
"""
from __future__ import annotations

import os

import torch

from .fisher_info import model_over_rows
from .utils import InputError


def linear_grams(model, objective, rows: list[dict]) -> tuple[dict[str, torch.Tensor], int]:
    """{weight name: the mean of x x^T over the input tokens} of every untied nn.Linear, and
    the number of tokens T."""
    model.eval()
    device = next(model.parameters()).device
    seen: dict[int, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        seen.setdefault(id(p), n)  # a tied weight's first name (the embedding's)
    acc: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        wname = f"{name}.weight"
        if seen.get(id(mod.weight)) != wname:  # tied to another tensor: averaged instead
            continue
        acc[wname] = torch.zeros(mod.in_features, mod.in_features, dtype=torch.float64, device=device)

        def hook(module, args, wname=wname):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            acc[wname].addmm_(x.T, x)
        hooks.append(mod.register_forward_pre_hook(hook))
    tokens = 0
    try:
        with torch.no_grad():
            for row in rows:
                batch = {k: v.to(device) for k, v in objective.collate([objective.encode(row)]).items()}
                objective.losses(model, batch)
                tokens += int(batch["input_ids"].numel())
    finally:
        for h in hooks:
            h.remove()
    if tokens == 0:
        raise InputError("gram: no input tokens in the rows")
    return {n: (g / tokens).to(torch.float32).cpu() for n, g in acc.items()}, tokens


def grams_of_checkpoint(task, model_path: str | os.PathLike, train: list[dict], n: int,
                        max_length: int) -> tuple[dict[str, torch.Tensor], list[str], int]:
    """The Gram matrices of the checkpoint `model_path` over the first `n` of `train`, the
    ids of the rows used and the token count."""
    model, objective, rows, stored = model_over_rows(task, model_path, train, n, max_length, "input_gram")
    grams, tokens = linear_grams(model, objective, rows)
    for name, g in grams.items():
        info = stored.get(name)
        if info is None or len(info.shape) != 2 or tuple(g.shape) != (info.shape[1], info.shape[1]):
            raise InputError(f"gram: linear weight {name!r} of {model_path} is not stored as a "
                             f"[out, {g.shape[0]}] tensor of its checkpoint")
    return grams, [r["id"] for r in rows], tokens
