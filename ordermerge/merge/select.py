"""parameter-selection: each element is taken from one sub-model drawn with probability p_i."""
from __future__ import annotations

import torch

from .rng import Sampler


def merge_chunk(sub_models: torch.Tensor, sampler: Sampler, *, seed: int, name: str,
                start: int) -> torch.Tensor:
    """`sub_models` is a [K, n] stack of flat elements start .. start+n-1 of tensor `name`."""
    n = sub_models.shape[1]
    index = torch.arange(start, start + n, dtype=torch.int64, device=sub_models.device)
    pick = sampler.choices(seed, name, 0, index)
    return sub_models.gather(0, pick.unsqueeze(0)).squeeze(0)


STACKED = True  # the torch path gathers across sub-models


def run(c):
    """The registry's entry point (methods.py): the torch path."""
    return merge_chunk(c.subs, c.sampler, seed=c.settings["seed"], name=c.name, start=c.start), {}


def fused_available(dtype: torch.dtype, out_dtype: torch.dtype | None, method: str = "") -> bool:
    from . import fused
    return fused.available(dtype)


def run_fused(c):
    from . import fused
    out, _, bad = fused.merge_at(c.addrs, None, c.n, c.dtype, c.sampler, rounds=0,
                                 seed=c.settings["seed"], name=c.name, start=c.start,
                                 check=c.check, out=c.out)
    return out, {"nonfinite": bad}
