"""selection + resample: where the chosen element equals the base, draw again, n rounds.

Round 0 is plain selection (the same draws as `select`). In each later round
every element whose chosen value has a zero task vector (tau_ij = theta_ij -
theta_base_j == 0 exactly) is drawn again from all K sub-models, and only
those elements are drawn: the draws are counter-based, so the others need
none. n = 0 is plain selection.
"""
from __future__ import annotations

import torch

from .rng import choices
from .select import merge_chunk as select_chunk

NAME = "resample"


def merge_chunk(sub_models: torch.Tensor, base: torch.Tensor, cuts: torch.Tensor, *, rounds: int,
                seed: int, name: str, start: int) -> torch.Tensor:
    """`sub_models` is a [K, n] stack and `base` the [n] base elements at start .. start+n-1."""
    out = select_chunk(sub_models, cuts, seed=seed, name=name, start=start)
    for r in range(1, rounds + 1):
        pos = (out == base).nonzero().squeeze(1)
        if pos.numel() == 0:
            break
        pick = choices(seed, name, r, pos + start, cuts)
        out[pos] = sub_models[pick, pos]
    return out
