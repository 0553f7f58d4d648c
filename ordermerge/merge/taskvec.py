"""Task vectors and what the task-vector methods share: tau_i = theta_i - theta_base in
float32, TIES' sign election with the disjoint mean, DARE's counter-based drop masks, and
the final theta_base + lambda * delta, rounded once to the output dtype.

Sign election and disjoint mean follow mergekit's `ties` (the TIES paper's steps 2 and 3):
the elected sign of an element is that of sum_i w_i tau_i (>= 0 counts as +); entries
agree when sign(w_i tau_i) equals it (zeros never agree); the merged delta is
sum of the agreeing w_i tau_i, divided by the sum of their w_i when `normalize` (a
divisor of 0 becomes 1).

The arithmetic is written out step by step, each product and sum rounded to float32 and
summed in sub-model order (never a fused multiply-add), so that the numba kernels of
fused_tv.py give the same bytes.
"""
from __future__ import annotations

import math

import torch

from . import rng
from .rounding import to_output

BITS = rng.BITS


def tau_of(subs, base: torch.Tensor) -> torch.Tensor:
    """[K, n] float32 tau_i = theta_i - theta_base (exact for most bf16 pairs), from the K
    sub-models' elements (a list or a [K, n] stack) and the base's."""
    subs = subs if isinstance(subs, torch.Tensor) else torch.stack(list(subs))
    return subs.to(torch.float32) - base.to(torch.float32)


def task_vectors(c) -> torch.Tensor:
    """The chunk's [K, n] task vectors."""
    return tau_of(c.subs, c.base)


def f32(values: list[float]) -> list[float]:
    """Python floats rounded to float32 (what a float32 kernel multiplies by)."""
    return torch.tensor(values, dtype=torch.float32).tolist()


def ordered_sum(terms) -> torch.Tensor:
    """t_0 + t_1 + ... in that order, in float32."""
    acc = terms[0].clone()
    for t in terms[1:]:
        acc.add_(t)
    return acc


def weighted_sum(tau: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """sum_i w_i tau_i: each product rounded to float32, added in sub-model order."""
    return ordered_sum([tau[i] * w for i, w in enumerate(weights)])


def elect_and_mix(tau: torch.Tensor, weights: list[float], normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """TIES' sign election and (disjoint) mean of the [K, n] task vectors tau_i with weights
    w_i. Returns the merged delta and the [K, n] mask of agreeing entries."""
    weighted = [tau[i] * w for i, w in enumerate(weights)]
    positive = ordered_sum(weighted) >= 0
    agree = torch.stack([torch.where(positive, x > 0, x < 0) for x in weighted])
    mixed = ordered_sum([x * a for x, a in zip(weighted, agree)])
    if normalize:
        divisor = ordered_sum([a * w for a, w in zip(agree.to(torch.float32), weights)])
        divisor[divisor == 0] = 1.0
        mixed = mixed / divisor
    return mixed, agree


def finish(c, delta: torch.Tensor) -> torch.Tensor:
    """theta_base + lambda * delta in float32, rounded once to the output dtype; NaN as the
    positive quiet NaN (as the average writes it)."""
    return to_output(c.base.to(torch.float32) + delta * f32([c.settings["lambda"]])[0], c.out_dtype)


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
