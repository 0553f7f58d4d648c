"""Counter-based draws: each element's draw depends only on (seed, tensor, round, index).

No generator state is carried between tensors, chunks or devices, so a merge
gives the same bytes whatever the chunking, thread count or processing order.
The mixer is SplitMix64's finaliser over the key plus the element index.
"""
from __future__ import annotations

import numpy as np
import torch

from ..utils import derive_seed

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def uniforms(seed: int, name: str, round_: int, offset: int, count: int) -> np.ndarray:
    """`count` float64 uniforms in [0, 1) for elements offset .. offset+count-1."""
    key = np.uint64(derive_seed(seed, name, round_))
    with np.errstate(over="ignore"):
        z = key + (np.arange(offset, offset + count, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def choices(seed: int, name: str, round_: int, offset: int, count: int,
            probs: list[float]) -> torch.Tensor:
    """For each element, the index of the sub-model drawn with probabilities `probs`."""
    cdf = np.cumsum(np.asarray(probs, dtype=np.float64))
    idx = np.searchsorted(cdf, uniforms(seed, name, round_, offset, count), side="right")
    # guard against a cdf that ends a rounding error below 1
    return torch.from_numpy(np.minimum(idx, len(probs) - 1).astype(np.int64))
