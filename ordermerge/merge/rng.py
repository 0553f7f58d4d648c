"""Counter-based draws: each element's draw depends only on (seed, tensor, round, index).

No generator state is carried between tensors, chunks or devices, so a merge
gives the same bytes whatever the chunking, thread count, processing order or
device. The mixer is SplitMix64's finaliser applied to key + (index + 1) * phi
(mod 2**64), and a draw is the top 53 bits. A sub-model is chosen by comparing
the draw with integer thresholds, so no floating point is involved. The CPU
computes it in numpy uint64 (or in the fused kernels of fused.py), other
devices in torch int64 with wrapping two's-complement arithmetic; all agree
bit for bit (tests check it).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

from ..utils import derive_seed

BITS = 53


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


GOLDEN = 0x9E3779B97F4A7C15  # phi * 2**64, SplitMix64's increment
_GOLDEN = _signed(GOLDEN)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _xor_shift_right(z: torch.Tensor, s: int, tmp: torch.Tensor) -> None:
    """z ^= z >>> s (logical shift), in place."""
    torch.bitwise_right_shift(z, s, out=tmp)
    tmp.bitwise_and_((1 << (64 - s)) - 1)
    z.bitwise_xor_(tmp)


def offset_key(seed: int, name: str, round_: int) -> int:
    """key + phi mod 2**64 (unsigned): element i's state is i * phi + offset_key."""
    return (derive_seed(seed, name, round_) + GOLDEN) % (1 << 64)


def draws(seed: int, name: str, round_: int, index: torch.Tensor) -> torch.Tensor:
    """Draws in [0, 2**53) for the flat element indices `index` (int64) of tensor `name`.

    On the CPU in numpy (native uint64 shifts: fewer passes than torch int64, about 2x
    faster); elsewhere in torch int64. Bit-identical.
    """
    if index.device.type == "cpu":
        return torch.from_numpy(_draws_numpy(seed, name, round_, index.numpy()))
    return _draws_torch(seed, name, round_, index)


_U = {name: np.uint64(v) for name, v in (("golden", GOLDEN), ("m1", 0xBF58476D1CE4E5B9),
                                           ("m2", 0x94D049BB133111EB))}
_SHIFT = {s: np.uint64(s) for s in (30, 27, 31, 64 - BITS)}


def _draws_numpy(seed: int, name: str, round_: int, index: np.ndarray) -> np.ndarray:
    z = np.multiply(index.view(np.uint64), _U["golden"])
    z += np.uint64(offset_key(seed, name, round_))
    t = np.empty_like(z)
    for shift, mult in ((30, _U["m1"]), (27, _U["m2"]), (31, None)):
        np.right_shift(z, _SHIFT[shift], out=t)
        z ^= t
        if mult is not None:
            z *= mult
    z >>= _SHIFT[64 - BITS]
    return z.view(np.int64)


def _draws_torch(seed: int, name: str, round_: int, index: torch.Tensor) -> torch.Tensor:
    z = torch.mul(index, _GOLDEN)
    z.add_(_signed(offset_key(seed, name, round_)))
    tmp = torch.empty_like(z)
    _xor_shift_right(z, 30, tmp)
    z.mul_(_M1)
    _xor_shift_right(z, 27, tmp)
    z.mul_(_M2)
    _xor_shift_right(z, 31, tmp)
    torch.bitwise_right_shift(z, 64 - BITS, out=tmp)
    return tmp.bitwise_and_((1 << BITS) - 1)


def thresholds(probs: list[float], device: torch.device | str = "cpu") -> torch.Tensor:
    """Integer cut points T_j = ceil(cdf_j 2**53), the cdf summed exactly from the float
    probabilities (equal ones taken as exactly 1/K): a draw u picks #{j : T_j <= u}."""
    # equal probabilities mean exactly 1/K each (1/3 is not a float)
    exact = [Fraction(1, len(probs))] * len(probs) if len(set(probs)) == 1 else map(Fraction, probs)
    cdf = [Fraction(0)]
    for p in list(exact)[:-1]:
        cdf.append(cdf[-1] + p)
    return torch.tensor([math.ceil(c * (1 << BITS)) for c in cdf[1:]], dtype=torch.int64,
                        device=device)


class Sampler:
    """Draws a sub-model per element with probabilities `probs`, from the integer cut points
    T_j = ceil(cdf_j 2**53): u picks #{j : T_j <= u}, i.e. i with cdf_{i-1} <= u/2**53 < cdf_i.
    """

    def __init__(self, probs: list[float], device: torch.device | str = "cpu"):
        self.k = len(probs)
        self.cuts = thresholds(probs, device)
        # with uniform probabilities, #{j : ceil(j 2**53 / K) <= u} = floor(u K / 2**53) for
        # every integer u: one multiply and shift replace the comparisons, same result
        self.uniform = len(set(probs)) == 1

    def choices(self, seed: int, name: str, round_: int, index: torch.Tensor) -> torch.Tensor:
        """The sub-model drawn for each flat element index in `index` of tensor `name`."""
        u = draws(seed, name, round_, index)
        if self.uniform:
            return u.mul_(self.k).bitwise_right_shift_(BITS)
        if self.k <= 16:
            pick = (u >= self.cuts[0]).to(torch.int64)
            for c in self.cuts[1:]:
                pick += u >= c
            return pick
        return torch.searchsorted(self.cuts, u, right=True)
