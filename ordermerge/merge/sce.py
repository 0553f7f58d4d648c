"""SCE (Wan et al. 2024, FuseChat: select, calculate, erase) as mergekit 0.1.5's `sce`.

Per tensor, with task vectors tau_i = theta_i - theta_base of the K runs:

1. select: where `select_topk` < 1, keep the positions whose variance across the K runs
   (population variance, torch.var(unbiased=False) of the K values) is among the
   k = int(select x (positions of nonzero variance)) largest; zero the rest in every tau_i.
2. calculate: run i's weight is the mean of its (selected) tau_i squared over the
   tensor, divided by the sum of the K means (uniform 1/K where that sum is below
   1e-6, as mergekit).
3. erase: TIES' sign election on the unweighted sum of the selected tau_i (>= 0 is +);
   entries of the other sign or zero are erased.

theta = theta_base + sum_i w_i tau_i [kept] / max(sum_i w_i [kept], 1e-6).

`prepare` makes two passes over the tensor: the k-th largest variance (topk's exact
radix selection over the variance's float32 bits, ties at the k-th broken by a fixed
hash of the element index) and the K sums of squares (float64); `run` mixes each chunk.

Where this differs from mergekit: ties at the k-th largest variance are kept by the
fixed rule above (mergekit: torch.topk's arbitrary choice); tau_i is float32 (mergekit
subtracts in the checkpoint's dtype); the sums of squares are float64 over the whole
tensor and the weights float32 (mergekit: float32 means). The default `select_topk` is 0.1
(mergekit's default 1.0 selects nothing: the variance step is what makes SCE SCE); the
1e-6 floor on the sum of the weights is mergekit's, an absolute threshold: task vectors
whose mean square is below about 1e-6 / K (small fine-tuning updates) get uniform weights.
"""
from __future__ import annotations

import torch

from . import topk
from .rounding import to_output
from .taskvec import elect_and_mix, f32, ordered_sum, task_vectors, tau_of
from ..utils import derive_seed


def _salt(name: str) -> int:
    return derive_seed("sce", name) & topk.M32


def variance(tau: torch.Tensor) -> torch.Tensor:
    """[n] population variance across the K rows of [K, n] (as mergekit computes it)."""
    return torch.var(tau, dim=0, unbiased=False)


def prepare(chunks, info, name: str, plan) -> dict:
    select = plan.settings["select_topk"]
    threshold = topk.KEEP_ALL
    if select < 1:
        nonzero = 0
        for _, subs, base in chunks():
            nonzero += int(torch.count_nonzero(variance(tau_of(subs, base))))
        keep = int(nonzero * select) if select > 0 else 0

        def mags():
            for start, subs, base in chunks():
                yield start, topk.magnitude_bits(variance(tau_of(subs, base))).unsqueeze(0)
        threshold = topk.kth_largest(mags, info.numel, [keep], [_salt(name)])[0]
    k = len(plan.subs)
    squares = torch.zeros(k, dtype=torch.float64)
    for start, subs, base in chunks():
        tau = _selected(tau_of(subs, base), start, name, threshold)
        squares += tau.to(torch.float64).square().sum(1)
    means = (squares / max(info.numel, 1)).tolist()
    total = sum(means)
    weights = [1.0 / k] * k if abs(total) < 1e-6 else [m / total for m in means]
    return {"threshold": threshold, "weights": f32(weights)}


def _selected(tau: torch.Tensor, start: int, name: str, threshold: int) -> torch.Tensor:
    if threshold == topk.KEEP_ALL:
        return tau
    keep = topk.keep_mask(topk.magnitude_bits(variance(tau)), start, _salt(name), threshold)
    return tau.mul_(keep)


def run(c):
    tau = _selected(task_vectors(c), c.start, c.name, c.state["threshold"])
    w = c.state["weights"]
    _, agree = elect_and_mix(tau, [1.0] * len(w), False)  # the unweighted election
    mixed = ordered_sum([tau[i] * (agree[i] * w[i]) for i in range(len(w))])
    divisor = ordered_sum([agree[i].to(torch.float32) * w[i] for i in range(len(w))]).clamp_(min=1e-6)
    out = c.base.to(torch.float32) + mixed / divisor
    return to_output(out, c.out_dtype), {"erased": int((~agree).sum())}
