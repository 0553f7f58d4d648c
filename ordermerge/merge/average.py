"""weighted-average: theta_j = sum_i w_i theta_ij, accumulated in float32 and cast once."""
from __future__ import annotations

import torch

from .rounding import to_output


def merge_chunk(sub_models: torch.Tensor | list[torch.Tensor], weights: list[float],
                out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """`sub_models`: the same chunk of a tensor from the K sub-models, as a [K, ...] stack
    or a list of K tensors.

    Equal weights: the K values are summed in float32 in sub-model order and the sum is
    divided by K. Other weights: each term w_i theta_i is rounded to float32 and added in
    sub-model order. No fused multiply-add is used, so every element's result is the same
    on any device, chunking and thread count; a NaN result is the positive quiet NaN.
    """
    acc = sub_models[0].to(torch.float32, copy=True)
    if len(set(weights)) == 1:
        for t in sub_models[1:]:
            acc.add_(t)  # converting bf16 / fp16 to float32 is exact
        acc.div_(len(weights))
    else:
        acc.mul_(weights[0])
        tmp = torch.empty_like(acc)
        for w, t in zip(weights[1:], sub_models[1:]):
            torch.mul(t.to(torch.float32), w, out=tmp)
            acc.add_(tmp)
    return to_output(acc, out_dtype or sub_models[0].dtype)


def run(c):
    """The registry's entry point (methods.py): the torch path."""
    return merge_chunk(c.subs, c.weights, c.out_dtype), {}


def fused_available(dtype: torch.dtype, out_dtype: torch.dtype | None, method: str = "") -> bool:
    from . import fused
    return fused.average_available(dtype) and out_dtype in (None, dtype)


def run_fused(c):
    from . import fused
    out, bad = fused.average_at(c.addrs, c.n, c.dtype, c.weights, c.check, out=c.out)
    return out, {"nonfinite": bad}
