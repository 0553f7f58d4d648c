"""weighted-average: theta_j = sum_i w_i theta_ij, accumulated in float32 and cast once."""
from __future__ import annotations

import torch

NAME = "average"


def merge_chunk(sub_models: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """`sub_models` is a [K, ...] stack of one chunk of a tensor from the K sub-models."""
    acc = torch.zeros(sub_models.shape[1:], dtype=torch.float32)
    for w, t in zip(weights, sub_models):
        acc += w * t.to(torch.float32)
    return acc.to(sub_models.dtype)
