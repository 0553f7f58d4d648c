"""Model Breadcrumbs (Davari and Belilovsky 2024) and DELLA (Deep et al. 2024): two
sparsifications of each task vector before task arithmetic or TIES' election, as
mergekit 0.1.5's `breadcrumbs`, `breadcrumbs_ties`, `della` and `della_linear`.

breadcrumbs (per tensor and run, deterministic): of the numel entries of tau_i, drop the
h = min(int(gamma numel), numel - int(density numel)) largest magnitudes (the outliers)
and keep the next int(density numel); density >= 1 keeps everything (as mergekit, even
the outliers). Both cuts are exact top-k thresholds (topk.py: ties at a cut broken by a
fixed hash of the element index, mergekit's sort keeps an arbitrary subset), one salt for
both so that the kept band is the ranks h+1 .. h+int(density numel) of one order.

della (per tensor and run, random): each entry of a row (the last dimension of a 2-D
tensor, the whole of a 1-D one; ranked along dim 1 as mergekit) is kept with probability
p = (density - epsilon) + 2 epsilon (r - 1) / (ncols - 1), r its magnitude's rank in the
row (1 = smallest; ties in index order, a stable sort; mergekit's argsort is arbitrary
among ties; a one-element row takes p = density), by a counter-based draw of (seed,
tensor, run, element) as DARE's. The kept entries are rescaled by 1/p (rescale=paper,
the DELLA paper's) or all by the tensor's L1 norm of tau_i over that of its kept part
(rescale=l1: mergekit's; 1 where either is below 1e-7). density >= 1 keeps every entry
unscaled; density - epsilon must be > 0 and density + epsilon < 1 (mergekit's rule,
checked with the settings, methods._della_check).

Then, with weights w_i: the linear variants give theta_base + lambda sum_i w_i tau'_i;
the TIES variants elect signs on sum_i w_i tau'_i and take the agreeing entries' sum,
divided by their weights' sum with `normalize` (taskvec.elect_and_mix).
"""
from __future__ import annotations

import torch

from . import rng, topk
from .st_io import MergeError
from .taskvec import elect_and_mix, f32, finish, task_vectors, tau_of, weighted_sum
from ..utils import derive_seed

LINEAR = ("breadcrumbs", "della_linear")


def _salts(name: str, k: int) -> list[int]:
    return [derive_seed("breadcrumbs", name, i) & topk.M32 for i in range(k)]


# -- breadcrumbs ---------------------------------------------------------------------------

def _cuts(numel: int, density: float, gamma: float) -> tuple[int, int]:
    """(h, h + kept): the ranks from the top at which the kept band starts and ends."""
    if density >= 1:
        return 0, numel
    target = int(density * numel)
    top = int(gamma * numel)
    bottom = max(0, numel - target - top)
    return numel - bottom - target, numel - bottom


def _prepare_breadcrumbs(chunks, info, name: str, plan) -> list[tuple[int, int]]:
    k = len(plan.subs)
    h, end = _cuts(info.numel, plan.settings["density"], plan.settings["gamma"])
    if plan.settings["density"] >= 1:
        return [(topk.KEEP_NONE, topk.KEEP_ALL)] * k

    from .fused_tv import magnitude_cuts
    salts = _salts(name, k)

    def cut(ks):  # TIES' search: the same thresholds whichever path finds them
        return magnitude_cuts(chunks, info, ks, salts, plan)
    return list(zip(cut([h] * k), cut([end] * k)))


def _breadcrumbs(c) -> tuple[torch.Tensor, int]:
    tau = task_vectors(c)
    salts = _salts(c.name, tau.shape[0])
    kept = 0
    for i, (high, low) in enumerate(c.state):
        bits = topk.magnitude_bits(tau[i])
        keep = topk.keep_mask(bits, c.start, salts[i], low)
        keep &= ~topk.keep_mask(bits, c.start, salts[i], high)
        tau[i].mul_(keep)
        kept += int(keep.sum())
    return tau, kept


# -- della ---------------------------------------------------------------------------------

def _ncols(info) -> int:
    if len(info.shape) > 2:
        raise MergeError(f"della ranks magnitudes along dim 1 (as mergekit): tensor "
                         f"{info.name!r} has {len(info.shape)} dimensions")
    return int(info.shape[-1]) if len(info.shape) == 2 else max(int(info.numel), 1)


def _della_masks(s: dict, name: str, tau_rows: torch.Tensor, lo: int, ncols: int):
    """Keep masks and per-element probabilities of the [K, rows x ncols] task vectors of
    whole rows starting at flat index lo."""
    k = tau_rows.shape[0]
    mags = tau_rows.abs().view(k, -1, ncols)
    order = torch.argsort(mags, dim=2, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(2, order, torch.arange(ncols, device=order.device).expand_as(order))
    d, e = s["density"], s["epsilon"]
    p = (d - e) + rank.to(torch.float64) * (2 * e / (ncols - 1)) if ncols > 1 else \
        torch.full(rank.shape, d, dtype=torch.float64, device=order.device)
    p = p.view(k, -1)
    index = torch.arange(lo, lo + p.shape[1], dtype=torch.int64)
    keep = torch.stack([(rng.draws(s["seed"], name, f"della{i}", index).to(torch.float64)
                         < (p[i].cpu() * (1 << rng.BITS))).to(p.device) for i in range(k)])
    return keep, p


def _row_reader(plan, info):
    def read(lo: int, n: int) -> torch.Tensor:
        return tau_of([s.view(info.name, lo, n) for s in plan.subs], plan.base.view(info.name, lo, n))
    return read


def _prepare_della(chunks, info, name: str, plan) -> dict:
    s = plan.settings
    ncols = _ncols(info)
    state = {"ncols": ncols, "read": _row_reader(plan, info), "scales": None}
    if s["rescale"] != "l1" or s["density"] >= 1:
        return state
    k = len(plan.subs)
    total = torch.zeros(k, dtype=torch.float64)
    kept = torch.zeros(k, dtype=torch.float64)
    rows = max(1, (1 << 16) // ncols)
    for lo in range(0, info.numel, rows * ncols):
        n = min(rows * ncols, info.numel - lo)
        tau = state["read"](lo, n)
        keep, _ = _della_masks(s, name, tau, lo, ncols)
        a = tau.abs().to(torch.float64)
        total += a.sum(1)
        kept += (a * keep).sum(1)
    state["scales"] = [t / q if min(t, q) >= 1e-7 else 1.0 for t, q in zip(total.tolist(), kept.tolist())]
    return state


def _della(c) -> tuple[torch.Tensor, int]:
    s, st = c.settings, c.state
    tau = task_vectors(c)
    if s["density"] >= 1:
        return tau, tau.numel()
    ncols = st["ncols"]
    lo = c.start - c.start % ncols  # the whole rows the chunk touches
    hi = -(-(c.start + c.n) // ncols) * ncols
    rows = st["read"](lo, hi - lo).to(tau.device)
    keep, p = _della_masks(s, c.name, rows, lo, ncols)
    keep, p = keep[:, c.start - lo:c.start - lo + c.n], p[:, c.start - lo:c.start - lo + c.n]
    if s["rescale"] == "l1":
        tau.mul_(keep).mul_(torch.tensor(f32(st["scales"]), device=tau.device)[:, None])
    else:  # 1 / p per kept entry, in float32
        tau.mul_(keep).mul_((1.0 / p).to(torch.float32))
    return tau, int(keep.sum())


# -- the registry's entry points -----------------------------------------------------------

def prepare(chunks, info, name: str, plan):
    if plan.method.name.startswith("della"):
        return _prepare_della(chunks, info, name, plan)
    return _prepare_breadcrumbs(chunks, info, name, plan)


def run(c):
    tau, kept = (_della if c.method.startswith("della") else _breadcrumbs)(c)
    w = f32(c.weights)
    if c.method in LINEAR:
        return finish(c, weighted_sum(tau, w)), {"kept": kept}
    mixed, _ = elect_and_mix(tau, w, c.settings["normalize"])
    return finish(c, mixed), {"kept": kept}

