"""DARE (Yu et al. 2024): drop each element of each task vector with probability p and
rescale what is kept, then combine.

- dare_linear: theta = theta_base + lambda * sum_i w_i tau'_i.
- dare_ties: TIES' sign election and disjoint mean over the tau'_i (no magnitude trim),
  x lambda (mergekit's dare_ties).
- dare_resample (the paper's resample carried into DARE): each element draws one
  sub-model uniformly; where the drawn tau'_ij is 0 (dropped, or unchanged by
  fine-tuning) it draws again from all K, `rounds` times; theta = theta_base + lambda *
  tau'_{i*} (the base where every draw found 0). Weights are not used.

tau'_i = tau_i * keep_i * s_i, with keep_i a counter-based mask (taskvec.dare_keep: it
depends only on seed, tensor, sub-model and element index) and s_i = 1 / (1 - p) (the
DARE paper's rescale, the default) or, with rescale=l1, the tensor's L1 norm of tau_i
over that of its kept part (what mergekit 0.1.5 does; 1 where either is below 1e-7).
"""
from __future__ import annotations

import torch

from .taskvec import (dare_keep, dare_scales, elect_and_mix, f32, finish, task_vectors, tau_of,
                      weighted_sum)


def prepare(chunks, info, name: str, plan) -> list[float] | None:
    """The L1 ratios of rescale=l1 (float64 sums over the tensor); nothing otherwise."""
    s = plan.settings
    if s["rescale"] != "l1":
        return None
    k = len(plan.subs)
    total = torch.zeros(k, dtype=torch.float64)
    kept = torch.zeros(k, dtype=torch.float64)
    for start, subs, base in chunks():
        tau = tau_of(subs, base).abs().to(torch.float64)
        index = torch.arange(start, start + tau.shape[1], dtype=torch.int64)
        total += tau.sum(1)
        for i in range(k):
            kept[i] += tau[i][dare_keep(s["seed"], name, i, index, s["drop"])].sum()
    # mergekit leaves the masked tensor unscaled when either norm is below 1e-7
    return [t / q if min(t, q) >= 1e-7 else 1.0 for t, q in zip(total.tolist(), kept.tolist())]


def dropped(c) -> tuple[torch.Tensor, int]:
    """The chunk's [K, n] tau'_i, and how many entries were kept."""
    s = c.settings
    tau = task_vectors(c)
    index = torch.arange(c.start, c.start + c.n, dtype=torch.int64)
    scales = f32(dare_scales(s["drop"], s["rescale"], c.state, tau.shape[0]))
    kept = 0
    for i in range(tau.shape[0]):
        keep = dare_keep(s["seed"], c.name, i, index, s["drop"]).to(tau.device)
        tau[i].mul_(keep).mul_(scales[i])
        kept += int(keep.sum())
    return tau, kept


def run(c):
    tau, kept = dropped(c)
    if c.method == "dare_linear":
        return finish(c, weighted_sum(tau, f32(c.weights))), {"kept": kept}
    if c.method == "dare_ties":
        mixed, _ = elect_and_mix(tau, f32(c.weights), c.settings["normalize"])
        return finish(c, mixed), {"kept": kept}
    # dare_resample
    s = c.settings
    index = torch.arange(c.start, c.start + c.n, dtype=torch.int64, device=tau.device)
    pick = c.sampler.choices(s["seed"], c.name, 0, index)
    delta = tau.gather(0, pick.unsqueeze(0)).squeeze(0)
    pos = (delta == 0).nonzero().squeeze(1)
    for r in range(1, s["rounds"] + 1):
        if pos.numel() == 0:
            break
        pick = c.sampler.choices(s["seed"], c.name, r, pos + c.start)
        values = tau[pick, pos]
        delta[pos] = values
        pos = pos[values == 0]
    return finish(c, delta), {"kept": kept, "zero_after_rounds": int(pos.numel())}


def fused_available(dtype, out_dtype, method: str) -> bool:
    """dare_linear and dare_ties have a fused CPU kernel; dare_resample runs its torch
    arithmetic."""
    from . import fused_tv
    return method in ("dare_linear", "dare_ties") and fused_tv.available(dtype, out_dtype)


def run_fused(c):
    from . import fused_tv
    from .rng import offset_key
    from .taskvec import drop_cut, f32
    s = c.settings
    k = len(c.addrs)
    if c.method not in ("dare_linear", "dare_ties"):
        raise NotImplementedError(c.method)
    return fused_tv.run(c, dare_keys=[offset_key(s["seed"], c.name, f"dare{i}") for i in range(k)],
                        dare_cut=drop_cut(s["drop"]),
                        scales=f32(dare_scales(s["drop"], s["rescale"], c.state, k)))
