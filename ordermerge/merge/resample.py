"""selection + resample: where the chosen element equals the base, draw again, n rounds.

Round 0 is plain selection. In each later round every element whose chosen
value has a zero task vector (tau_ij = theta_ij - theta_base_j == 0 exactly)
is drawn again from all K sub-models. n = 0 is plain selection.
"""
from __future__ import annotations

import torch

from .rng import choices

NAME = "resample"


def merge_chunk(sub_models: torch.Tensor, base: torch.Tensor, probs: list[float], *, rounds: int,
                seed: int, name: str, offset: int) -> torch.Tensor:
    flat = sub_models.reshape(sub_models.shape[0], -1)
    base = base.reshape(-1)
    pick = choices(seed, name, 0, offset, flat.shape[1], probs)
    out = flat.gather(0, pick.unsqueeze(0)).squeeze(0)
    for r in range(1, rounds + 1):
        unchanged = out == base
        if not bool(unchanged.any()):
            break
        again = choices(seed, name, r, offset, flat.shape[1], probs)
        out = torch.where(unchanged, flat.gather(0, again.unsqueeze(0)).squeeze(0), out)
    return out.reshape(sub_models.shape[1:])
