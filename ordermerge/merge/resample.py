"""selection + resample: where the chosen element equals the base, draw again, n rounds.

Round 0 is plain selection (the same draws as `select`). In each later round
every element whose chosen value has a zero task vector (tau_ij = theta_ij -
theta_base_j == 0 exactly) is drawn again from all K sub-models. Only those
elements are drawn and compared again: the draws are counter-based, so the
others need none. n = 0 is plain selection.
"""
from __future__ import annotations

import numpy as np
import torch

from .rng import Sampler
from .select import merge_chunk as select_chunk


def _where(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the true elements (numpy's is about 5x faster than torch's on CPU)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.nonzero().squeeze(1)


def merge_chunk(sub_models: torch.Tensor, base: torch.Tensor, sampler: Sampler, *, rounds: int,
                seed: int, name: str, start: int) -> tuple[torch.Tensor, int]:
    """`sub_models` is a [K, n] stack and `base` the [n] base elements at start .. start+n-1.

    Returns the merged [n] elements and how many of them still equal the base.
    """
    out = select_chunk(sub_models, sampler, seed=seed, name=name, start=start)
    n = sub_models.shape[1]
    flat = sub_models.reshape(-1)
    pos = _where(out == base)
    for r in range(1, rounds + 1):
        if pos.numel() == 0:
            break
        pick = sampler.choices(seed, name, r, pos + start)
        values = flat.take(pick.mul_(n).add_(pos))
        out[pos] = values
        pos = pos.take(_where(values == base.take(pos)))
    return out, int(pos.numel())


STACKED = True  # the torch path gathers across sub-models


def run(c):
    """The registry's entry point (methods.py): the torch path. Counts the elements still
    equal to the base after the last round."""
    out, left = merge_chunk(c.subs, c.base, c.sampler, rounds=c.settings["rounds"],
                            seed=c.settings["seed"], name=c.name, start=c.start)
    return out, {"equal_to_base": left}


def fused_available(dtype: torch.dtype, out_dtype: torch.dtype | None, method: str = "") -> bool:
    from . import fused
    return fused.available(dtype)


def run_fused(c):
    from . import fused
    out, left, bad = fused.merge_at(c.addrs, c.base_addr, c.n, c.dtype, c.sampler,
                                    rounds=c.settings["rounds"], seed=c.settings["seed"],
                                    name=c.name, start=c.start, check=c.check, out=c.out)
    return out, {"equal_to_base": left, "nonfinite": bad}
