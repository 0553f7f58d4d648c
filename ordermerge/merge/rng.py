"""Counter-based draws: each element's draw depends only on (seed, tensor, round, index).

No generator state is carried between tensors, chunks or devices, so a merge
gives the same bytes whatever the chunking, thread count, processing order or
device. The mixer is SplitMix64's finaliser applied to key + (index + 1) * phi,
computed in int64 with wrapping arithmetic (two's complement, identical to
uint64 bit for bit), and a draw is the top 53 bits. A sub-model is chosen by
comparing the draw with integer thresholds, so no floating point is involved.
"""
from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..utils import derive_seed

BITS = 53


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _xor_shift_right(z: torch.Tensor, s: int, tmp: torch.Tensor) -> None:
    """z ^= z >>> s (logical shift), in place."""
    torch.bitwise_right_shift(z, s, out=tmp)
    tmp.bitwise_and_((1 << (64 - s)) - 1)
    z.bitwise_xor_(tmp)


def key_of(seed: int, name: str, round_: int) -> int:
    return _signed(derive_seed(seed, name, round_))


def draws(seed: int, name: str, round_: int, index: torch.Tensor) -> torch.Tensor:
    """Draws in [0, 2**53) for the flat element indices `index` (int64) of tensor `name`."""
    z = index + 1
    z.mul_(_GOLDEN).add_(key_of(seed, name, round_))
    tmp = torch.empty_like(z)
    _xor_shift_right(z, 30, tmp)
    z.mul_(_M1)
    _xor_shift_right(z, 27, tmp)
    z.mul_(_M2)
    _xor_shift_right(z, 31, tmp)
    torch.bitwise_right_shift(z, 64 - BITS, out=tmp)
    return tmp.bitwise_and_((1 << BITS) - 1)


def thresholds(probs: list[float], device: torch.device | str = "cpu") -> torch.Tensor:
    """Integer cut points: a draw u picks sub-model #{j : T_j <= u}, i.e. i with
    cdf_{i-1} <= u / 2**53 < cdf_i, exactly as comparing u / 2**53 with the float cdf."""
    cdf = [Fraction(0)]
    for p in probs[:-1]:
        cdf.append(cdf[-1] + Fraction(p))
    return torch.tensor([math.ceil(c * (1 << BITS)) for c in cdf[1:]], dtype=torch.int64,
                        device=device)


def choices(seed: int, name: str, round_: int, index: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
    """The sub-model drawn for each element of `index`, with the cut points of `thresholds`."""
    return torch.searchsorted(cuts, draws(seed, name, round_, index), right=True)
