"""Task vectors and what the task-vector methods share: tau_i = theta_i - theta_base in
float32, TIES' sign election with the disjoint mean, DARE's counter-based drop masks, and
the final theta_base + lambda * delta, rounded once to the output dtype.

Sign election and disjoint mean follow mergekit's `ties` (the TIES paper's steps 2 and 3):
the elected sign of an element is that of sum_i w_i tau_i (>= 0 counts as +); entries
agree when sign(w_i tau_i) equals it (zeros never agree); the merged delta is
sum of the agreeing w_i tau_i, divided by the sum of their w_i when `normalize` (a
divisor of 0 becomes 1). Everything is float32, summed in sub-model order.
"""
from __future__ import annotations

import math

import torch

from . import rng

BITS = rng.BITS


def task_vectors(c) -> torch.Tensor:
    """[K, n] float32 tau_i = theta_i - theta_base of the chunk (exact for most bf16 pairs)."""
    subs = c.subs if isinstance(c.subs, torch.Tensor) else torch.stack(list(c.subs))
    return subs.to(torch.float32) - c.base.to(torch.float32)


def weights_of(c, device) -> torch.Tensor:
    """The task vectors' weights as a [K, 1] float32 column."""
    return torch.tensor(c.weights, dtype=torch.float32, device=device).unsqueeze(1)


def elect_and_mix(weighted: torch.Tensor, w: torch.Tensor, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """TIES' sign election and (disjoint) mean of the [K, n] weighted task vectors w_i tau_i.
    Returns the merged delta and the [K, n] mask of agreeing entries."""
    majority = torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
    agree = weighted.sign() == majority
    mixed = (weighted * agree).sum(0)
    if normalize:
        divisor = (w * agree).sum(0)
        divisor[divisor == 0] = 1.0
        mixed = mixed / divisor
    return mixed, agree


def finish(c, delta: torch.Tensor) -> torch.Tensor:
    """theta_base + lambda * delta in float32, rounded once to the output dtype; NaN as the
    positive quiet NaN (as the average writes it)."""
    out = (c.base.to(torch.float32) + delta * c.settings["lambda"]).to(c.out_dtype)
    nan = out.isnan()
    if bool(nan.any()):
        out.masked_fill_(nan, float("nan"))
    return out


def drop_cut(p: float) -> int:
    """A draw u in [0, 2**53) drops its element when u < ceil(p 2**53): probability p."""
    return math.ceil(p * (1 << BITS))


def dare_keep(seed: int, name: str, i: int, index: torch.Tensor, p: float) -> torch.Tensor:
    """DARE's mask of sub-model i over the flat element indices `index`: counter-based, so
    it depends only on (seed, tensor, i, index), never on chunking, threads or device."""
    return rng.draws(seed, name, f"dare{i}", index) >= drop_cut(p)


def dare_scales(p: float, rescale: str, l1_ratios: list[float] | None, k: int) -> list[float]:
    """The factor of each sub-model's kept elements: 1 / (1 - p) (the DARE paper), or the
    tensor's L1 norm of tau_i over that of its kept part (mergekit 0.1.5's rescale)."""
    if rescale == "l1":
        return list(l1_ratios)
    return [0.0 if p >= 1 else 1.0 / (1.0 - p)] * k
