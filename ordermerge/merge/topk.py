"""Exact, streaming top-k of |tau| per tensor (TIES' trim), with ties broken deterministically.

Each element gets a distinct 63-bit key: the float32 bits of |tau| (monotone in |tau| for
non-negative floats) in the high 31 bits, and a bijective 32-bit hash of the element's
flat index (salted per tensor and sub-model) in the low 32. "Keep the k largest keys" is
then exact: elements with larger |tau| always win, and elements tied at the k-th
magnitude (common with bf16 checkpoints, where mergekit's argsort keeps an arbitrary
subset) are kept in hash order, which is a fixed pseudo-random choice that depends
only on (tensor, sub-model, index), never on chunking, threads or device.

The k-th largest key is found by radix selection over passes through the tensor's
chunks: a 65,536-bin histogram of the top 16 bits (the bf16 bit pattern of |tau|), then of
the next digits among the elements still in the running, until the candidates fit
`limit`; those are collected and sorted. Memory: a histogram per sub-model and at most
`limit` keys, however large the tensor.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

M32 = (1 << 32) - 1
KEEP_ALL = -1  # every key is >= it
KEEP_NONE = (1 << 63) - 1  # no key reaches it (|tau| bits < 2**31 - 2**22)
# every key of a nonzero |tau| is >= it, no key of a zero: the threshold where the k-th
# largest |tau| is 0 (fused_tv.band_kth_largest). It keeps fewer than k entries, and TIES'
# and TIES-select's outputs are the same bytes as with the exact k-th key: the entries the
# two thresholds treat differently are all tau = +-0, and trimming multiplies an entry by 0
# where keeping multiplies it by 1 (ties.trimmed, fused_tv._merge_tv): +-0 * 0 = +-0 * 1,
# so every later step computes on the same numbers. Only the count of kept entries differs
NONZERO = 1 << 32
DIGITS = (16, 16, 16, 15)  # bits 47..62, 31..46, 15..30, 0..14


def nonzero_floor(thresholds: list[int]) -> list[int]:
    """kth_largest's thresholds with NONZERO where the k-th largest |tau| is 0."""
    return [NONZERO if 0 <= t < NONZERO else t for t in thresholds]


def perm32(index: torch.Tensor, salt: int) -> torch.Tensor:
    """A bijection of [0, 2**32) applied to index ^ salt (odd multiplies and xor-shifts
    mod 2**32; int64 arithmetic wraps, the low 32 bits are exact)."""
    x = index.bitwise_xor(salt & M32)
    x = x.mul(0x9E3779B1).bitwise_and_(M32)
    x.bitwise_xor_(x >> 16)
    x = x.mul_(0x85EBCA6B).bitwise_and_(M32)
    x.bitwise_xor_(x >> 13)
    x = x.mul_(0xC2B2AE35).bitwise_and_(M32)
    return x.bitwise_xor_(x >> 16)


def magnitude_bits(tau: torch.Tensor) -> torch.Tensor:
    """The float32 bits of |tau| as int64 (NaN ranks above inf)."""
    return tau.abs().view(torch.int32).to(torch.int64)


def keys_of(mag: torch.Tensor, start: int, salt: int, top16: int | None = None) -> torch.Tensor:
    """The keys of one chunk's elements (of those whose top 16 key bits are `top16`)."""
    if top16 is None:
        idx = torch.arange(mag.numel(), device=mag.device)
    else:
        idx = ((mag >> 15) == top16).nonzero().squeeze(1)
    return (mag[idx] << 32) | perm32(idx + start, salt)


def keep_mask(mag: torch.Tensor, start: int, salt: int, threshold: int) -> torch.Tensor:
    """Elements whose key is >= threshold. The hash is computed only where |tau| ties with
    the threshold's."""
    if threshold == KEEP_ALL:
        return torch.ones_like(mag, dtype=torch.bool)
    t_mag, t_low = threshold >> 32, threshold & M32
    keep = mag > t_mag
    tied = (mag == t_mag).nonzero().squeeze(1)
    if tied.numel():
        keep[tied] = perm32(tied + start, salt) >= t_low
    return keep


def kth_largest(chunks: Callable[[], Iterable[tuple[int, torch.Tensor]]], numel: int,
                ks: list[int], salts: list[int], limit: int = 1 << 22) -> list[int]:
    """For each i, the ks[i]-th largest key of row i, where `chunks()` yields (start,
    [K, n] int64 magnitude bits) over the whole tensor (called once per pass). Exactly
    ks[i] keys of row i are >= the result (KEEP_ALL / KEEP_NONE at the ends)."""
    out: dict[int, int] = {}
    # per row in the running: [prefix, fixed bits, rank still needed, candidates]
    run: dict[int, list[int]] = {}
    for i, k in enumerate(ks):
        if k >= numel:
            out[i] = KEEP_ALL
        elif k <= 0:
            out[i] = KEEP_NONE
        else:
            run[i] = [0, 0, k, numel]
    while run:
        collect = {i for i, r in run.items() if r[3] <= limit}
        width = {i: DIGITS[len([b for b in (16, 32, 48) if b <= r[1]])] for i, r in run.items()}
        hist = {i: torch.zeros(1 << width[i], dtype=torch.int64) for i in run if i not in collect}
        found: dict[int, list[torch.Tensor]] = {i: [] for i in collect}
        for start, mags in chunks():
            for i, (prefix, fixed, _, _) in run.items():
                if fixed == 0 and i not in collect:  # only |tau|'s top 16 bits: no hash
                    hist[i] += torch.bincount((mags[i] >> 15).cpu(), minlength=1 << 16)
                    continue
                keys = keys_of(mags[i], start, salts[i], None if fixed == 0 else prefix >> (fixed - 16))
                if fixed:
                    keys = keys[(keys >> (63 - fixed)) == prefix]
                if i in collect:
                    found[i].append(keys.cpu())
                else:
                    digit = (keys >> (63 - fixed - width[i])) & ((1 << width[i]) - 1)
                    hist[i] += torch.bincount(digit.cpu(), minlength=1 << width[i])
        for i in list(run):
            prefix, fixed, need, _ = run[i]
            if i in collect:
                keys = torch.cat(found[i]).sort(descending=True).values
                out[i] = int(keys[need - 1])
                del run[i]
                continue
            h = hist[i].flip(0).cumsum(0)  # counts of the digits from the top down
            pos = int((h < need).sum())  # the digit holding the need-th largest
            digit = (1 << width[i]) - 1 - pos
            above = int(h[pos - 1]) if pos else 0
            prefix, fixed = (prefix << width[i]) | digit, fixed + width[i]
            count = int(hist[i][digit])
            if fixed == 63:  # keys are distinct: this digit holds exactly the one key
                out[i] = prefix
                del run[i]
            else:
                run[i] = [prefix, fixed, need - above, count]
    return [out[i] for i in range(len(ks))]
