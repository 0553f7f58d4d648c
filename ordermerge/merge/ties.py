"""TIES (Yadav et al. 2023) as mergekit computes it, and its selection variant.

ties: per tensor, each tau_i keeps its top `density` fraction by magnitude
(k_i = max(1, int(density * numel)) elements, none at density 0, exact: ties at the k-th magnitude are broken by a
fixed hash of the element index, topk.py; density >= 1 keeps all), then the sign of
sum_i w_i tau_i is elected per element and the agreeing entries are averaged
(sum_i w_i tau_i [agree] / sum_i w_i [agree] with `normalize`, else the plain sum):
theta = theta_base + lambda * that.

Where this differs from the TIES paper: the paper trims each task vector over the whole
model (one top-k across all its parameters); mergekit and this code trim per tensor. The
paper's disjoint mean is unweighted; with weights w_i it is the weighted mean above
(equal for w_i = 1). And from mergekit 0.1.5: tau_i is float32 here (mergekit subtracts
in the checkpoint's dtype, bf16), and ties at the k-th magnitude are kept by the fixed
rule above rather than by argsort's arbitrary order.

ties_select (the paper's selection carried into TIES): after the same trim and election,
each element takes one task vector drawn uniformly among those that survived the trim and
agree with the elected sign (counter-based draws, round 0 of rng's stream), or none
(the base) where no entry agrees: theta = theta_base + lambda * tau_{i*}.
"""
from __future__ import annotations

import torch

from . import topk
from .rng import BITS, draws
from .taskvec import elect_and_mix, f32, finish, task_vectors
from ..utils import derive_seed


def _salts(name: str, k: int) -> list[int]:
    return [derive_seed("ties", name, i) & topk.M32 for i in range(k)]


def prepare(chunks, info, name: str, plan) -> list[int]:
    """Each sub-model's top-k threshold for this tensor (topk.kth_largest): numba's band
    pass or histogram passes on the CPU, else topk's radix passes; topk.NONZERO where the
    k-th largest |tau| is 0, on every path (the same output, and `kept` then counts the
    nonzero entries: fewer than k)."""
    return topk.nonzero_floor(_thresholds(chunks, info, name, plan))


def _thresholds(chunks, info, name: str, plan) -> list[int]:
    k = len(plan.subs)
    numel = info.numel
    density = plan.settings["density"]
    # as mergekit: at least one element when density > 0, all of them at density >= 1
    keep = numel if density >= 1 else (0 if density <= 0 else max(1, int(density * numel)))
    from .fused_tv import magnitude_cuts
    return magnitude_cuts(chunks, info, [keep] * k, _salts(name, k), plan)



def trimmed(c) -> tuple[torch.Tensor, int]:
    """The chunk's [K, n] task vectors with everything outside each one's top-k zeroed, and
    how many entries were kept."""
    tau = task_vectors(c)
    salts = _salts(c.name, tau.shape[0])
    kept = 0
    for i, threshold in enumerate(c.state):
        keep = topk.keep_mask(topk.magnitude_bits(tau[i]), c.start, salts[i], threshold)
        tau[i].mul_(keep)
        kept += int(keep.sum())
    return tau, kept


def run(c):
    tau, kept = trimmed(c)
    w = f32(c.weights)
    if c.method == "ties":
        mixed, _ = elect_and_mix(tau, w, c.settings["normalize"])
        return finish(c, mixed), {"kept": kept}
    # ties_select: one agreeing, surviving task vector per element, drawn uniformly
    _, agree = elect_and_mix(tau, w, False)
    count = agree.sum(0)
    index = torch.arange(c.start, c.start + c.n, dtype=torch.int64, device=tau.device)
    u = draws(c.settings["seed"], c.name, 0, index)
    rank = (u * count) >> BITS  # uniform in [0, count)
    pick = (agree.cumsum(0) <= rank).sum(0, keepdim=True)  # the (rank+1)-th agreeing row
    chosen = tau.gather(0, pick.clamp_(max=tau.shape[0] - 1)).squeeze(0)
    delta = torch.where(count > 0, chosen, torch.zeros_like(chosen))
    return finish(c, delta), {"kept": kept, "no_agreeing": int((count == 0).sum())}


def fused_available(dtype, out_dtype, method: str) -> bool:
    """ties has a fused CPU kernel; ties_select runs its torch arithmetic."""
    from . import fused_tv
    return method == "ties" and fused_tv.available(dtype, out_dtype)


def run_fused(c):
    from . import fused_tv
    if c.method != "ties":
        raise NotImplementedError(c.method)
    return fused_tv.run(c, thresholds=c.state, salts=_salts(c.name, len(c.addrs)))
