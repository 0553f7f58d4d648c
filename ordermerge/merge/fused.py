"""Fused CPU kernels for select and resample (numba), bit-identical to the torch/numpy path.

One pass per chunk computes each element's draw (the SplitMix64 of rng.py), picks its
sub-model and copies the element's bits, with the rounds of resample inside the same loop,
parallel over elements. Values are moved as raw bits (uint16 for bf16/fp16, uint32 for
fp32); "equal to the base" is float equality on those bits (+0 == -0, NaN never equal),
as torch's `==` decides it. Used when numba is installed; otherwise the engine falls back
to the unfused methods, which give the same bytes.
"""
from __future__ import annotations

import numpy as np
import torch

try:
    import numba
    from llvmlite import ir
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

from .rng import BITS, GOLDEN, Sampler, offset_key

_BITS_DTYPE = {torch.bfloat16: (np.uint16, 0x7FFF, 0x7F80), torch.float16: (np.uint16, 0x7FFF, 0x7C00),
               torch.float32: (np.uint32, 0x7FFFFFFF, 0x7F800000)}


def available(dtype: torch.dtype) -> bool:
    return numba is not None and dtype in _BITS_DTYPE


def average_available(dtype: torch.dtype, k: int) -> bool:
    """The fused average takes the K inputs as a tuple; numba indexes tuples of more than
    8 arrays slowly (K=16 measured 2x slower than the torch path), so only K <= 8."""
    return numba is not None and dtype in (torch.bfloat16, torch.float32) and k <= 8


if numba is not None:
    _u64 = numba.uint64

    @numba.njit(inline="always")
    def _draw(key_plus_golden, index):
        z = index * _u64(GOLDEN) + key_plus_golden
        z = (z ^ (z >> _u64(30))) * _u64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _u64(27))) * _u64(0x94D049BB133111EB)
        z = z ^ (z >> _u64(31))
        return z >> _u64(64 - BITS)

    @numba.njit(inline="always")
    def _pick(u, k, uniform, cuts):
        if uniform:
            return np.int64((u * _u64(k)) >> _u64(BITS))
        p = 0
        for c in cuts:
            if u >= c:
                p += 1
        return p

    @numba.njit(inline="always")
    def _float_equal(a, b, abs_mask, inf_bits):
        # same bits and not NaN, or both zeros of either sign; bitwise & and | on the
        # comparisons keep it free of branches
        return ((a == b) & ((a & abs_mask) <= inf_bits)) | (((a | b) & abs_mask) == 0)

    @intrinsic
    def _as_f32(typingctx, bits):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())
        return numba.float32(numba.uint32), codegen

    @intrinsic
    def _as_u32(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(32))
        return numba.uint32(numba.float32), codegen

    @numba.njit(inline="always")
    def _bf16_to_f32(b):
        return _as_f32(numba.uint32(b) << numba.uint32(16))

    @numba.njit(inline="always")
    def _f32_to_bf16(f):
        # round to nearest, ties to even; NaN to the quiet NaN (torch's conversion)
        if f != f:
            return numba.uint16(0x7FC0)
        u = _as_u32(f)
        return numba.uint16((u + numba.uint32(0x7FFF) + ((u >> numba.uint32(16)) & numba.uint32(1)))
                            >> numba.uint32(16))

    @numba.njit(parallel=True, cache=True)
    def _average_bf16(subs, out, weights, equal):
        k = len(subs)
        n = out.shape[0]
        for j in numba.prange(n):
            if equal:
                acc = _bf16_to_f32(subs[0][j])
                for i in range(1, k):
                    acc += _bf16_to_f32(subs[i][j])
                acc /= numba.float32(k)
            else:
                acc = _bf16_to_f32(subs[0][j]) * weights[0]
                for i in range(1, k):
                    acc += _bf16_to_f32(subs[i][j]) * weights[i]
            out[j] = _f32_to_bf16(acc)  # NaN becomes the quiet NaN 0x7FC0

    @numba.njit(parallel=True, cache=True)
    def _average_f32(subs, out, weights, equal):
        k = len(subs)
        n = out.shape[0]
        for j in numba.prange(n):
            if equal:
                acc = subs[0][j]
                for i in range(1, k):
                    acc += subs[i][j]
                acc /= numba.float32(k)
            else:
                acc = subs[0][j] * weights[0]
                for i in range(1, k):
                    acc += subs[i][j] * weights[i]
            if acc != acc:
                acc = np.float32(np.nan)  # the quiet NaN 0x7FC00000, whatever the payload
            out[j] = acc

    @numba.njit(parallel=True, cache=True)
    def _merge(subs, base, out, keys, start, uniform, cuts, abs_mask, inf_bits):
        """keys[r] = key of round r plus phi (uint64); len(keys) - 1 resample rounds. With a
        base (len(base) == n), returns how many elements still equal it."""
        k = subs.shape[0]
        n = out.shape[0]
        rounds = len(keys) - 1
        has_base = base.shape[0] == n
        left = 0
        for j in numba.prange(n):
            index = start + _u64(j)  # uint64 throughout: uint64 + int64 would be float64
            v = subs[_pick(_draw(keys[0], index), k, uniform, cuts), j]
            if has_base:
                b = base[j]
                r = 1
                while r <= rounds and _float_equal(v, b, abs_mask, inf_bits):
                    v = subs[_pick(_draw(keys[r], index), k, uniform, cuts), j]
                    r += 1
                if _float_equal(v, b, abs_mask, inf_bits):
                    left += 1
            out[j] = v
        return left


def merge_chunk(sub_models: torch.Tensor, base: torch.Tensor | None, sampler: Sampler, *,
                rounds: int, seed: int, name: str, start: int) -> tuple[torch.Tensor, int]:
    """select (rounds=0, base None) or resample over a [K, n] CPU stack of one chunk.

    A stack, not K separate arrays: indexing a tuple by the drawn sub-model compiles to an
    unpredictable branch, about 2x slower than the copy into the stack."""
    np_dtype, abs_mask, inf_bits = _BITS_DTYPE[sub_models.dtype]
    torch_bits = torch.int16 if np_dtype == np.uint16 else torch.int32
    subs = sub_models.view(torch_bits).numpy().view(np_dtype)
    n = subs.shape[1]
    out = torch.empty(n, dtype=sub_models.dtype)
    out_np = out.view(torch_bits).numpy().view(np_dtype)
    base_np = (base.view(torch_bits).numpy().view(np_dtype) if base is not None
               else np.zeros(0, dtype=np_dtype))
    keys = np.array([offset_key(seed, name, r) for r in range(rounds + 1)], dtype=np.uint64)
    cuts = sampler.cuts.cpu().numpy().astype(np.uint64)
    left = _merge(subs, base_np, out_np, keys, np.uint64(start), sampler.uniform, cuts,
                  np_dtype(abs_mask), np_dtype(inf_bits))
    return out, int(left)


def average_chunk(views: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """The weighted average of K bf16 or fp32 CPU views, in one pass, as average.py does it:
    float32, equal weights summed then divided by K, other weights as float32 products,
    NaN results written as the positive quiet NaN."""
    dtype = views[0].dtype
    out = torch.empty(views[0].shape[0], dtype=dtype)
    w = np.asarray(weights, dtype=np.float32)
    equal = len(set(weights)) == 1
    if dtype == torch.bfloat16:
        subs = tuple(v.view(torch.int16).numpy().view(np.uint16) for v in views)
        _average_bf16(subs, out.view(torch.int16).numpy().view(np.uint16), w, equal)
    else:
        _average_f32(tuple(v.numpy() for v in views), out.numpy(), w, equal)
    return out
