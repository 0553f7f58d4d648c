"""Means on the sphere, per tensor: the Karcher mean (mergekit 0.1.5's `karcher`) and
Multi-SLERP (its `multislerp`).

Both are computed from the K x K Gram matrix of the tensor's K vectors: every step of
either method (norms, unit vectors, their weighted mean, geodesic angles, tangent
vectors, the exponential map) keeps its vectors in the span of the K inputs, so each
vector is held as K coefficients and every dot product is a quadratic form in the Gram.
`prepare` reads the tensor once for the Gram (float64 products of blocks of BLOCK
elements aligned to element 0, added in order: the same sums at any chunking) and runs
the method's iteration on K numbers; the result is theta = sum_i a_i x_i (plus the base
for Multi-SLERP), with a_i rounded once to float32, computed per chunk as float32
products added in sub-model order and rounded once to the output dtype.

karcher (raw weights x_i = theta_i, as mergekit; weights alpha_i, uniform by default):
  units u_i = x_i / |x_i| (runs with |x_i| <= tol left out of the mean); mean = the
  normalised alpha-weighted sum of the units (the first unit where that sum's norm is
  below tol); then up to `max_iter` times: tangent = sum_i alpha_i theta_i / sin theta_i
  (u_i - cos theta_i mean) over the units with theta_i = arccos(mean . u_i) >= tol; stop
  when |tangent| < tol; else mean = cos|t| mean + sin|t| t / |t|, renormalised. Result:
  (sum_i alpha_i |x_i|) mean.

multislerp (task vectors x_i = theta_i - theta_base; weights w_i normalised to sum 1):
  units u_i = x_i / (|x_i| + eps); mean = sum_i w_i u_i, normalised (K = 2 with a zero
  mean: the weighted sum of the two task vectors; K > 2: refused, naming the tensor);
  tangent = sum_i w_i (u_i - (u_i . mean) mean); result = mean cos|t| + t sin|t| / |t|
  (|t| + eps), scaled by sum_i w_i |x_i|, plus the base. The tangent is zero in exact
  arithmetic (the weighted tangents at the weighted mean's direction sum to zero), so
  the result is the direction of the weighted mean of the unit task vectors, at their
  weighted mean norm; mergekit's float32 sum leaves a rounding residue of size ~1e-7
  there, this a float64 one.

Where this differs from mergekit: the dot products are float64 sums of exact products
(mergekit: float32 reductions in the checkpoint's dtype), the iteration runs in float64,
and the output is one float32 linear combination of the inputs rounded once (mergekit
rounds each step's tensor to the working dtype). The results agree within the float32
roundings of mergekit's steps (tests/test_new_merges.py).
"""
from __future__ import annotations

import math

import torch

from .rounding import to_output
from .st_io import MergeError

BLOCK = 1 << 16


def gram(plan, info) -> torch.Tensor:
    """The K x K Gram (float64) of the tensor's vectors: the raw sub-models, or their task
    vectors where the plan has a base; blocks aligned to element 0, added in order."""
    k = len(plan.subs)
    g = torch.zeros(k, k, dtype=torch.float64)
    for lo in range(0, info.numel, BLOCK):
        n = min(BLOCK, info.numel - lo)
        x = torch.stack([s.view(info.name, lo, n) for s in plan.subs]).to(torch.float64)
        if plan.base is not None:
            x -= plan.base.view(info.name, lo, n).to(torch.float64)
        g += x @ x.T
    return g


def _norm(g: torch.Tensor, c: torch.Tensor) -> float:
    return math.sqrt(max(float(c @ g @ c), 0.0))


def karcher_coefficients(g: torch.Tensor, alphas: list[float], max_iter: int = 10,
                         tol: float = 1e-5) -> list[float]:
    """a_i with the Karcher mean = sum_i a_i x_i, from the Gram g of the x_i."""
    k = g.shape[0]
    norms = [math.sqrt(max(float(g[i, i]), 0.0)) for i in range(k)]
    valid = [i for i in range(k) if norms[i] > tol]
    if k == 1:
        return [1.0]
    if not valid:
        return [0.0] * k
    # the units' Gram: u_i . u_j
    u = torch.zeros(k, k, dtype=torch.float64)
    for i in valid:
        for j in valid:
            u[i, j] = g[i, j] / (norms[i] * norms[j])
    total = sum(alphas[i] for i in valid)
    alpha = torch.zeros(k, dtype=torch.float64)
    for i in valid:
        alpha[i] = alphas[i] / total
    mean = alpha.clone()  # coefficients over the units
    m = _norm(u, mean)
    if m < tol:
        mean = torch.zeros(k, dtype=torch.float64)
        mean[valid[0]] = 1.0
    else:
        mean /= m
    for _ in range(max_iter):
        tangent = torch.zeros(k, dtype=torch.float64)
        dots = u @ mean  # mean . u_i
        for i in valid:
            dot = min(max(float(dots[i]), -1.0), 1.0)
            theta = math.acos(dot)
            if theta < tol:
                continue
            f = float(alpha[i]) * theta / math.sin(theta)
            tangent -= f * dot * mean
            tangent[i] += f
        t = _norm(u, tangent)
        if t < tol:
            break
        mean = math.cos(t) * mean + math.sin(t) * (tangent / t)
        un = _norm(u, mean)
        if un > tol:
            mean /= un
    scale = sum(a * n for a, n in zip(alphas, norms))
    return [scale * float(mean[i]) / norms[i] if i in valid else 0.0 for i in range(k)]


def multislerp_coefficients(g: torch.Tensor, weights: list[float], name: str,
                            eps: float = 1e-8) -> list[float]:
    """a_i with Multi-SLERP's task vector = sum_i a_i tau_i, from the Gram g of the tau_i."""
    k = g.shape[0]
    if k == 1:
        return [1.0]
    w = torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    norms = torch.tensor([math.sqrt(max(float(g[i, i]), 0.0)) for i in range(k)], dtype=torch.float64)
    d = 1.0 / (norms + eps)  # unit_i = d_i tau_i
    u = g * d[:, None] * d[None, :]
    mean = w.clone()  # over the units
    m = _norm(u, mean)
    if m < eps:
        if k == 2:  # mergekit's fallback: linear interpolation of the task vectors
            return w.tolist()
        raise MergeError(f"multislerp: tensor {name!r}: the weighted sum of the unit task "
                         "vectors is zero (antipodal task vectors with balancing weights)")
    mean /= m
    dots = u @ mean
    tangent = w.clone() - float((w * dots).sum()) * mean
    t = _norm(u, tangent) + eps
    result = mean * math.cos(t) + tangent * (math.sin(t) / t)
    scale = float((norms * w).sum())
    return (result * scale * d).tolist()


def prepare(chunks, info, name: str, plan) -> list[float]:
    """This tensor's coefficients, rounded to float32."""
    g = gram(plan, info)
    s = plan.settings
    if plan.method.name == "karcher":
        a = karcher_coefficients(g, plan.weights, s["max_iter"], s["tol"])
    else:
        a = multislerp_coefficients(g, plan.weights, info.name)
    return torch.tensor(a, dtype=torch.float32).tolist()


def run(c):
    """sum_i a_i x_i (+ the base): float32 products added in sub-model order."""
    acc = None
    for a, x in zip(c.state, c.subs):
        # (a new tensor: a float32 input's .to() would be the read-only mapped checkpoint)
        term = x.to(torch.float32) if c.base is None else x.to(torch.float32) - c.base.to(torch.float32)
        term = term * a
        acc = term if acc is None else acc.add_(term)
    if c.base is not None:
        acc = c.base.to(torch.float32) + acc
    return to_output(acc, c.out_dtype), {}
