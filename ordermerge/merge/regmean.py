"""RegMean (Jin et al., ICLR 2023): per linear layer y = W x, the merge that best reproduces
every run's outputs on its own inputs, in closed form from each run's input Gram matrix.

    W*^T = (sum_i w_i G~_i + r I)^-1  sum_i w_i G~_i W_i^T,   G~_i = a G_i + (1 - a) diag(G_i)

G_i: run i's input Gram over n training rows (gram_info.py, the `input_gram` rule); a the
paper's off-diagonal scaling (`alpha`; 1: the exact least-squares merge, minimising
sum_i w_i |X_i W^T - X_i W_i^T|^2; 0: each input feature's Gram-weighted average); r the
ridge, `ridge` times the mean diagonal of sum_i w_i G~_i (0 by default: a singular sum is
refused naming the tensor; the Gram of a layer is singular where its inputs over the rows
span fewer dimensions than it has, e.g. fewer tokens than features). Every other tensor
(embeddings, norms, biases, tied weights) is the weighted average (average.py); w_i = 1/K
by default, the paper's.

`prepare` solves each linear weight whole, in float64 (torch.linalg.solve), from the K
weights and Grams read once; `run` takes each chunk of that solution and rounds it once to
the output dtype. Memory: the weight's [out, in] solution and two float64 [in, in] /
[in, out] accumulators, one tensor at a time.
"""
from __future__ import annotations

import torch

from .average import merge_chunk as weighted_average
from .rounding import to_output
from .st_io import MergeError


def solve(weights: list[torch.Tensor], grams: list[torch.Tensor], w: list[float],
          alpha: float, ridge: float, name: str = "") -> torch.Tensor:
    """W* ([out, in], float64) from the runs' W_i ([out, in]) and G_i ([in, in])."""
    d = grams[0].shape[0]
    a = torch.zeros(d, d, dtype=torch.float64)
    b = torch.zeros(d, weights[0].shape[0], dtype=torch.float64)
    for wi, W, G in zip(w, weights, grams):
        g = G.to(torch.float64)
        if alpha != 1:
            g = alpha * g + (1 - alpha) * torch.diag(torch.diagonal(g))
        g = g * wi
        a += g
        b += g @ W.to(torch.float64).T
    if ridge:
        a += ridge * float(torch.diagonal(a).mean()) * torch.eye(d, dtype=torch.float64)
    try:
        sol = torch.linalg.solve(a, b)
    except RuntimeError as e:  # torch.linalg.LinAlgError: singular
        raise MergeError(f"regmean: tensor {name!r}: the runs' summed input Gram is singular "
                         f"({e}); set the method's ridge (e.g. 1e-6)") from None
    if not bool(torch.isfinite(sol).all()):
        raise MergeError(f"regmean: tensor {name!r}: the solution is not finite (a NaN or Inf "
                         "in a Gram or a weight, or a near-singular Gram: set the ridge)")
    return sol.T


def prepare(chunks, info, name: str, plan) -> torch.Tensor | None:
    """The merged weight of a linear layer (one with a Gram in every run's file), float32
    and flat; None for the other tensors (averaged chunk by chunk)."""
    if info.name not in plan.aux[0].tensors:
        return None
    out_f, in_f = info.shape
    n = info.numel
    weights = [s.view(info.name, 0, n).view(out_f, in_f) for s in plan.subs]
    grams = [a.view(info.name, 0, in_f * in_f).view(in_f, in_f) for a in plan.aux]
    s = plan.settings
    return solve(weights, grams, plan.weights, s["alpha"], s["ridge"], info.name).to(torch.float32).reshape(-1)


def run(c):
    if c.state is None:
        return weighted_average(c.subs, c.weights, c.out_dtype), {}
    return to_output(c.state[c.start:c.start + c.n].to(c.subs[0].device), c.out_dtype), {"solved": c.n}
