"""weighted-average: theta_j = sum_i w_i theta_ij, accumulated in float32 and cast once."""
from __future__ import annotations

import torch

NAME = "average"


def merge_chunk(sub_models: torch.Tensor, weights: list[float],
                out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """`sub_models` is a [K, ...] stack of one chunk of a tensor from the K sub-models.

    Each term is rounded to float32 and added in sub-model order (no fused
    multiply-add), so every element's result is the same on any device and chunking.
    """
    acc = torch.zeros(sub_models.shape[1:], dtype=torch.float32, device=sub_models.device)
    tmp = torch.empty_like(acc)
    for w, t in zip(weights, sub_models):
        torch.mul(t.to(torch.float32), w, out=tmp)
        acc.add_(tmp)
    return acc.to(out_dtype or sub_models.dtype)
