"""Fisher merging (Matena and Raffel, NeurIPS 2022), the diagonal version:

    theta_j = sum_i w_i F_ij theta_ij / sum_i w_i F_ij

per element j, with F_i run i's diagonal Fisher information, estimated by
ordermerge/fisher_info.py (the mean over n training rows of the squared gradient of the
row's log-likelihood; the workflow's `diagonal_fisher` rule, one file per run). Where every F_ij is 0
(a parameter no row's gradient reaches, e.g. the embedding of an unused token), the
element is the weighted average. With equal F_i it is the weighted average, up to float32
rounding (tests/test_fisher.py).

Arithmetic in float32, in sub-model order, rounded once to the output dtype. No floor is
added to F (FusionBench adds 1e-6, which on a small model's Fisher, often below 1e-8,
turns the merge into the average).
"""
from __future__ import annotations

import torch

from .average import merge_chunk as weighted_average
from .rounding import to_output


def run(c):
    num = den = None
    for w, theta, f in zip(c.weights, c.subs, c.aux):
        wf = f.to(torch.float32) * w
        term = wf * theta.to(torch.float32)
        num = term if num is None else num.add_(term)
        den = wf if den is None else den.add_(wf)
    fallback = weighted_average(c.subs, c.weights, torch.float32)
    positive = den > 0
    out = torch.where(positive, num / torch.where(positive, den, torch.ones_like(den)), fallback)
    return to_output(out, c.out_dtype), {"fisher_zero": int((~positive).sum())}
