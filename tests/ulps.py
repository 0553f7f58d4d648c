"""Float tolerances stated from the arithmetic, shared by the tests that compare two code
paths, two processes or two backends.

A tolerance here is a count of rounding steps, never a number read off one machine:

- `unit_roundoff(dtype)`: u = 2^-p for a p-bit significand (float32 2^-24, bfloat16 2^-8,
  float16 2^-11): one correctly rounded operation is off by at most u relative.
- `gamma(n, dtype)`: n u / (1 - n u), the worst-case relative error of any order of a sum of
  n terms, relative to the sum of their magnitudes (Higham, *Accuracy and Stability of
  Numerical Algorithms*, 2nd ed., Lemma 3.1). Two orders of the same sum differ by at most
  twice that.
- `probable(n, dtype)`: lambda sqrt(n) u with lambda = 6, the probabilistic bound of Higham
  and Mary (SIAM J. Sci. Comput. 41(5), 2019, Theorem 2.4): with rounding errors independent
  and of mean zero, a sum of n terms is within it, relative to the sum of magnitudes, with
  probability at least 1 - 2 exp(-lambda^2 (1-u)^2 / 2) (> 1 - 3e-8 at lambda = 6). Used only
  where the worst case is too loose to catch a wrong result, and said so where used.
- `steps_apart(a, b)`: how many representable values of the dtype lie between two tensors'
  elements (0: the same value; 1: neighbours, as two roundings of nearby values are). The
  CPU's kernels decide which elements of two runs round to neighbouring values, not how
  far apart they can be.
"""
import math

import torch

_BITS = {torch.float64: 53, torch.float32: 24, torch.bfloat16: 8, torch.float16: 11}
_INT = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16,
        torch.float16: torch.int16}


def unit_roundoff(dtype: torch.dtype) -> float:
    return 2.0 ** -_BITS[dtype]


def gamma(n: int, dtype: torch.dtype = torch.float32) -> float:
    nu = n * unit_roundoff(dtype)
    assert nu < 1, (n, dtype)
    return nu / (1 - nu)


LAMBDA = 6.0


def probable(n: int, dtype: torch.dtype = torch.float32) -> float:
    return LAMBDA * math.sqrt(n) * unit_roundoff(dtype)


def _ordered(t: torch.Tensor) -> torch.Tensor:
    """The dtype's bit patterns as integers in the order of the values (-0 and +0 equal)."""
    bits = t.contiguous().view(_INT[t.dtype]).to(torch.int64)
    width = torch.finfo(t.dtype).bits
    magnitude = bits & ((1 << (width - 1)) - 1)
    return torch.where(bits < 0, -magnitude, magnitude)


def steps_apart(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per element, the number of steps between a and b on the dtype's grid (int64). NaN is
    refused: a NaN has no place on the grid."""
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert not (a.isnan().any() or b.isnan().any()), "NaN in a compared tensor"
    return (_ordered(a) - _ordered(b)).abs()


def ulp(t: torch.Tensor) -> torch.Tensor:
    """Per element, the dtype's step at |t| (float64): the spacing of the representable values
    in t's binade, 2^(e - p) for |t| in [2^(e-1), 2^e); below the smallest normal number (zero
    and subnormals) the subnormal step 2^(emin - p + 1)."""
    info = torch.finfo(t.dtype)
    _, e = torch.frexp(t.double().abs().clamp(min=info.tiny))
    return torch.ldexp(torch.ones_like(t, dtype=torch.float64), e - _BITS[t.dtype])


def forward_error(config: dict, positions: int, dtype: torch.dtype = torch.float32) -> float:
    """How far a decoder's logits can be from exact, relative to the largest logit, when
    its forward pass reduces in some order: each of the 2 L sublayers (attention, MLP) and
    the head adds at most probable(n), n the longest reduction (hidden, intermediate or key
    positions), relative to the residual stream's magnitude."""
    n = max(config["hidden_size"], config["intermediate_size"], positions)
    return (2 * config["num_hidden_layers"] + 1) * probable(n, dtype)


def near_tie(config: dict, positions: int) -> float:
    """How near a tie, relative to the largest logit, a greedy choice must be for two
    forward passes that reduce in other orders to choose differently there: each pass's
    logits are within forward_error of exact, so a gap between two of them moves by at most
    four times that (tests/test_vllm.py's docstring)."""
    return 4 * forward_error(config, positions)


def only_near_ties(report: dict) -> bool:
    """bench/generate.py's report: every output that differs between its two batchings
    comes from a prompt whose greedy path met a near tie."""
    tie = near_tie(report["config"], report["longest"])
    return all(report["min_margin"][i] < tie for i in report["differ"])
