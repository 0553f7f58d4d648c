"""parameter-selection: each element is taken from one sub-model drawn with probability p_i."""
from __future__ import annotations

import torch

from .rng import choices

NAME = "select"


def merge_chunk(sub_models: torch.Tensor, probs: list[float], *, seed: int, name: str,
                offset: int) -> torch.Tensor:
    """`offset` is the flat index of the chunk's first element within tensor `name`."""
    flat = sub_models.reshape(sub_models.shape[0], -1)
    pick = choices(seed, name, 0, offset, flat.shape[1], probs)
    return flat.gather(0, pick.unsqueeze(0)).reshape(sub_models.shape[1:])
