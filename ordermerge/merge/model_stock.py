"""Model Stock (Jang et al., ECCV 2024) as mergekit 0.1.5's `model_stock` computes it (with
its default `filter_wise: false`).

Per tensor, with task vectors tau_i = theta_i - theta_base of the K runs:

    cos = mean over pairs i < j of  tau_i . tau_j / max(|tau_i| |tau_j|, 1e-6), clamped to [-1, 1]
    t   = K cos / (1 + (K - 1) cos)          (0, the base, where |1 + (K - 1) cos| < 1e-6)
    theta = t * avg_i theta_i + (1 - t) * theta_base

`prepare` reads the tensor once for the K x K Gram matrix of the task vectors; `run` mixes
each chunk. On the CPU both are numba kernels (fused.gram_at, and the average's kernel with
the mix), each one pass over the mapped inputs. The Gram's float64 sums are in a fixed
order there (lanes, blocks) and in BLAS's order on the torch path; t, rounded to float32,
is the same on both unless the two float64 results straddle a float32 rounding boundary
(their difference is about n 2^-53 of the sums, the boundaries 2^-24 apart). With weights w_i the average is the weighted one (average.py); Model Stock and
mergekit use the plain mean, the default 1/K.

Where this differs from mergekit: the dot products are accumulated in float64 over blocks
of the tensor and t is rounded once to float32, where mergekit reduces in the tensor's own
dtype in one pass. t can therefore differ in its last float32 bits, and the merged elements
by up to 1 float32 ulp of the tensor's largest element (tests/test_model_stock.py). The mix is computed in float32
and rounded once to the output dtype. mergekit computes it in the dtype it loads (its
`dtype` setting), so bf16 checkpoints merged there are rounded at every step. The
per-row variant (`filter_wise: true`) is not offered.
"""
from __future__ import annotations

import torch

from .average import merge_chunk as weighted_average
from .rounding import to_output
from .taskvec import tau_of

BLOCK = 1 << 16  # elements per float64 block of prepare(): K x 64k x 8 bytes


def interpolation_ratio(gram: torch.Tensor) -> float:
    """t from the K x K Gram matrix of the task vectors (float64), rounded to float32."""
    k = gram.shape[0]
    norms = gram.diagonal().clamp(min=0).sqrt()
    cos = [float((gram[i, j] / max(float(norms[i] * norms[j]), 1e-6)).clamp(-1, 1))
           for i in range(k) for j in range(i + 1, k)]
    c = sum(cos) / len(cos)
    den = 1 + (k - 1) * c
    t = 0.0 if abs(den) < 1e-6 else k * c / den
    return float(torch.tensor(t, dtype=torch.float32))


def prepare(chunks, info, name: str, plan) -> float:
    """This tensor's t: the task vectors' Gram matrix over the whole tensor, in float64 (the
    fused path: numba over the mapped tensor; else torch's matrix products)."""
    k = len(plan.subs)
    if info.name in plan.fused:
        from . import fused
        n = info.numel
        gram = torch.from_numpy(fused.gram_at([s.address(info.name, 0, n) for s in plan.subs],
                                              plan.base.address(info.name, 0, n), n,
                                              info.torch_dtype))
        return interpolation_ratio(gram)
    gram = torch.zeros(k, k, dtype=torch.float64)
    for _, subs, base in chunks():
        for lo in range(0, base.numel(), BLOCK):
            tau = tau_of([s[lo:lo + BLOCK] for s in subs], base[lo:lo + BLOCK]).double()
            gram += tau @ tau.T
    return interpolation_ratio(gram)


def run(c):
    t = c.state
    avg = weighted_average(c.subs, c.weights, torch.float32)
    return to_output(avg.mul_(t).add_(c.base.to(torch.float32).mul(1.0 - t)), c.out_dtype), {}


def fused_available(dtype: torch.dtype, out_dtype: torch.dtype | None, method: str = "") -> bool:
    from . import fused
    return fused.average_available(dtype) and out_dtype in (None, dtype)


def run_fused(c):
    """The average and the mix in the average's kernel, one pass."""
    from . import fused
    out, bad = fused.average_at(c.addrs, c.n, c.dtype, c.weights, c.check, base_addr=c.base_addr,
                                t=c.state, out=c.out)
    return out, {"nonfinite": bad}
