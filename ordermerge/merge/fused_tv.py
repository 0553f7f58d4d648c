"""Fused CPU kernels (numba) for the task-vector methods, bit-identical to their torch
arithmetic (taskvec.py, task_arithmetic.py, ties.py, dare.py; tests check it).

One kernel serves task-arithmetic, TIES, DARE-linear and DARE-TIES: per element it reads
the K inputs and the base in place (by address, as fused.py does), forms tau_i in float32,
applies TIES' trim (the exact top-k threshold keys of topk.py) or DARE's counter-based
drop and rescale, then the weighted sum or the sign election with the disjoint mean, and
writes theta_base + lambda * delta rounded once. Each product and sum is a separate float32
operation in sub-model order, as the torch code does it.

The NaN/Inf check (check=True) tests what the kernel writes: a NaN or Inf input or base
makes its tau NaN or Inf; trimming and dropping multiply by 0 or 1 and rescaling by a
finite scale (Inf * 0 is NaN), the sums and the elected mean add it to everything after
it, and theta_base + lambda * delta keeps it (Inf * 0 is NaN again). So every element
that read a non-finite value is written non-finite, as is one whose finite arithmetic
overflowed; the engine then names the first input or output element at fault.

TIES' per-tensor thresholds are here too: one pass over a band that a sample of the
tensor points to (band_kth_largest), else the histogram of |tau|'s top 16 bits and the keys
in the k-th element's bin (histogram_kth_largest).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import fused, topk
from .fused import BLOCK, numba
from .methods import get

def available(dtype: torch.dtype, out_dtype: torch.dtype | None) -> bool:
    """bf16 and fp32 inputs, written in their own dtype."""
    return numba is not None and dtype in (torch.bfloat16, torch.float32) and out_dtype in (None, dtype)


# the band pass reads each input over this many elements at a time (the K inputs of a
# block sit at one offset within their pages: short reads of many of them alias in cache)
BAND_BLOCK = 16384

if numba is not None:
    from .fused import (LANES, _as_u32, _block, _draw, _load, _narrow, _nonfinite, _part,
                        _where, _widen, _widen_into)

    _u64 = numba.uint64

    @numba.njit(inline="always")
    def _perm32(x):
        m = _u64(0xFFFFFFFF)
        x = x & m
        x = (x * _u64(0x9E3779B1)) & m
        x = x ^ (x >> _u64(16))
        x = (x * _u64(0x85EBCA6B)) & m
        x = x ^ (x >> _u64(13))
        x = (x * _u64(0xC2B2AE35)) & m
        return x ^ (x >> _u64(16))

    @numba.njit(inline="always")
    def _mag(x, b):
        """|x - b|'s float32 bits as int64: topk.magnitude_bits of one task-vector element."""
        return np.int64(_as_u32(abs(x - b)))

    @numba.njit(inline="always")
    def _key(mag, index, salt):
        """topk.keys_of for one element: its |tau| bits above, perm32(index ^ salt) below."""
        return (mag << 32) | np.int64(_perm32(_u64(index) ^ salt))

    @numba.njit(parallel=True, cache=True)
    def _merge_tv(addrs, base_addr, out, start, mode, weights, lam, normalize, thresholds, salts,
                  dare_keys, dare_cut, scales, kept, check):
        """mode 0 task-arithmetic, 1 TIES, 2 DARE-linear, 3 DARE-TIES over the n = len(out)
        elements at `start`; kept[block] counts the task-vector entries kept. Per block, one
        simple loop per step and sub-model (each vectorised), in the torch code's order.
        Returns, with `check`, how many output elements are NaN or Inf."""
        k = addrs.shape[0]
        n = out.shape[0]
        blocks = (n + BLOCK - 1) // BLOCK
        trim = mode == 1
        drop = mode >= 2
        elect = mode == 1 or mode == 3
        zero = np.float32(0.0)
        one = np.float32(1.0)
        bad = 0
        for bi in numba.prange(blocks):
            lo = bi * BLOCK
            m = min(n, lo + BLOCK) - lo
            tv = np.empty((k, BLOCK), dtype=np.float32)
            b = np.empty(BLOCK, dtype=np.float32)
            acc = np.empty(BLOCK, dtype=np.float32)
            div = np.empty(BLOCK, dtype=np.float32)
            total = np.empty(BLOCK, dtype=np.float32)
            first = _u64(start) + _u64(lo)
            count = 0
            _widen_into(b, base_addr, lo, m, out)
            for i in range(k):
                a = addrs[i]
                row = tv[i]
                for t in range(m):
                    row[t] = _widen(_load(a, lo + t, out)) - b[t]
                if trim:
                    thr = thresholds[i]
                    tm = thr >> 32
                    tl = thr & 0xFFFFFFFF
                    salt = salts[i]
                    for t in range(m):
                        mag = np.int64(_as_u32(abs(row[t])))
                        keep = mag > tm
                        if mag == tm:
                            keep = np.int64(_perm32((first + _u64(t)) ^ salt)) >= tl
                        row[t] = row[t] * (one if keep else zero)
                        count += keep
                elif drop:
                    key = dare_keys[i]
                    sc = scales[i]
                    for t in range(m):
                        keep = _draw(key, first + _u64(t)) >= dare_cut
                        v = row[t] * (one if keep else zero)
                        row[t] = v * sc
                        count += keep
            # sum_i w_i tau_i: the delta of the linear modes, the elected sign's vote in the others
            w0 = weights[0]
            for t in range(m):
                total[t] = tv[0, t] * w0
            for i in range(1, k):
                w = weights[i]
                row = tv[i]
                for t in range(m):
                    total[t] = total[t] + row[t] * w
            if not elect:
                acc = total
            else:
                for i in range(k):
                    w = weights[i]
                    row = tv[i]
                    for t in range(m):
                        x = row[t] * w
                        agree = (x > zero) if total[t] >= zero else (x < zero)
                        ai = one if agree else zero
                        if i == 0:
                            acc[t] = x * ai
                            div[t] = ai * w
                        else:
                            acc[t] = acc[t] + x * ai
                            div[t] = div[t] + ai * w
                if normalize:
                    for t in range(m):
                        d = div[t]
                        acc[t] = acc[t] / (one if d == zero else d)
            nf = 0
            o = out[lo:lo + m]  # indexed from 0: no negative-index test, so the loop vectorises
            for t in range(m):  # `check` is the same throughout: the compiler unswitches it
                r = _narrow(b[t] + acc[t] * lam, out)
                o[t] = r
                if check:
                    nf += _nonfinite(r)
            bad += nf
            kept[bi] = count
        return bad

    @numba.njit(parallel=True, cache=True)
    def _mag_hist(addrs, base_addr, like, n, hist):
        """hist[p, i, bin] += elements of part p whose |tau_i| float32 bits >> 15 are bin.
        Row by row within a part, so one row's histogram (int32, 256 KiB) stays in cache."""
        k = addrs.shape[0]
        parts = hist.shape[0]
        per = (n + parts - 1) // parts
        for p in numba.prange(parts):
            h = hist[p]
            for i in range(k):
                a = addrs[i]
                row = h[i]
                for j in range(p * per, min(n, (p + 1) * per)):
                    mag = _as_u32(abs(_widen(_load(a, j, like)) - _widen(_load(base_addr, j, like))))
                    row[mag >> numba.uint32(15)] += 1

    @numba.njit(parallel=True, cache=True)
    def _collect(addrs, base_addr, like, n, start, bins, salts, keys, offsets, filled):
        """Append the keys of the elements in bin bins[i] (-1: none) of each row i (rows in
        parallel: each writes its own segment of `keys`)."""
        k = addrs.shape[0]
        for i in numba.prange(k):
            if bins[i] < 0:
                continue
            a = addrs[i]
            at = offsets[i] + filled[i]
            for j in range(n):
                mag = _mag(_widen(_load(a, j, like)), _widen(_load(base_addr, j, like)))
                if (mag >> 15) == bins[i]:
                    keys[at] = _key(mag, start + j, salts[i])
                    at += 1
            filled[i] = at - offsets[i]


    @numba.njit(parallel=True, cache=True)
    def _band(addrs, base_addr, like, n, start, his, los, salts, keys, offsets, caps, filled, above):
        """Part p of the chunk (one per thread, contiguous blocks), every row i: above[p, i]
        += elements whose |tau_i| bits exceed his[i]; the keys of those with los[i] <= bits
        <= his[i] go to keys[offsets[p, i]:][:caps[i]] (filled[p, i] counts them all, so a
        full segment shows as filled[p, i] > caps[i]). Per block and row: |tau| bits and the
        count above in one vectorised loop, the band's flags in another, their positions
        compressed (fused._where), then their keys."""
        k = addrs.shape[0]
        parts = filled.shape[0]
        for p in numba.prange(parts):
            b = np.empty(BAND_BLOCK, dtype=np.float32)
            mag = np.empty(BAND_BLOCK, dtype=np.int64)
            pos = np.empty(BAND_BLOCK + LANES, dtype=np.int32)  # room for _where's last store
            flags = np.empty(BAND_BLOCK + LANES, dtype=np.uint8)
            iota = np.arange(BAND_BLOCK + LANES).astype(np.int32)
            first, end = _part(p, parts, (n + BAND_BLOCK - 1) // BAND_BLOCK)
            for bi in range(first, end):
                lo = bi * BAND_BLOCK
                m = min(n, lo + BAND_BLOCK) - lo
                _widen_into(b, base_addr, lo, m, like)
                for i in range(k):
                    a = addrs[i]
                    hi = his[i]
                    low = los[i]
                    count = 0
                    for t in range(m):
                        g = _mag(_widen(_load(a, lo + t, like)), b[t])
                        mag[t] = g
                        count += g > hi
                    above[p, i] += count
                    if low > hi:
                        continue
                    width = _u64(hi - low)
                    for t in range(m):
                        flags[t] = _u64(mag[t] - low) <= width
                    c = _where(iota, flags, m, pos)
                    at = filled[p, i]
                    seg = offsets[p, i]
                    room = max(0, min(c, caps[i] - at))
                    for q in range(room):
                        t = pos[q]
                        keys[seg + at + q] = _key(mag[t], start + lo + t, salts[i])
                    filled[p, i] = at + c


    @numba.njit(inline="always")
    def _rank_bin(hist, r):
        """The bin of `hist` (counts from the smallest values up) holding the r-th smallest
        value, and the count below it."""
        below = 0
        b = 0
        while below + hist[b] <= r:
            below += hist[b]
            b += 1
        return b, below

    @numba.njit(parallel=True, cache=True)
    def _select(keys, offsets, filled, ranks, los, his, out):
        """out[i] = the ranks[i]-th smallest key of row i (ranks[i] < 0: none), the row being
        its parts' segments of `keys`, whose |tau| bits lie in [los[i], his[i]]; rows in
        parallel. A histogram of the keys' |tau| bits (at most 65,536 bins over the band)
        finds the bin holding the rank; only that bin's keys are partitioned (np.partition
        over every key of the band took a third of a TIES merge's wall on 2 cores before
        it ran rows in parallel, and most of the selection's after)."""
        parts, k = filled.shape
        for i in numba.prange(k):
            r = ranks[i]
            if r < 0:
                continue
            lo = los[i]
            span = his[i] - lo + 1
            shift = 0
            while (span >> shift) > 65535:
                shift += 1
            hist = np.zeros((span >> shift) + 1, dtype=np.int64)
            for p in range(parts):
                o = offsets[p, i]
                for q in range(filled[p, i]):
                    hist[((keys[o + q] >> 32) - lo) >> shift] += 1
            b, below = _rank_bin(hist, r)
            sub = np.empty(hist[b], dtype=np.int64)
            at = 0
            for p in range(parts):
                o = offsets[p, i]
                for q in range(filled[p, i]):
                    key = keys[o + q]
                    if (((key >> 32) - lo) >> shift) == b:
                        sub[at] = key
                        at += 1
            out[i] = np.partition(sub, r - below)[r - below]

    @numba.njit(parallel=True, cache=True)
    def _sample_runs(addrs, base_addr, like, first, stride, runs, width, out, col):
        """out[i, col + r * width + t] = |tau_i|'s float32 bits at element first + r * stride
        + t of the chunk, for r < runs, t < width (runs in parallel)."""
        k = addrs.shape[0]
        for r in numba.prange(runs):
            at = first + r * stride
            for i in range(k):
                a = addrs[i]
                for t in range(width):
                    b = _widen(_load(base_addr, at + t, like))
                    out[i, col + r * width + t] = np.int32(_mag(_widen(_load(a, at + t, like)), b))

    @numba.njit(cache=True)
    def _nth(row, hist, r):
        """The r-th smallest of `row` (int32 |tau| bits, >= 0), `hist` its counts by bits >> 20
        (an eighth of an octave per bin): only the bin holding the rank is partitioned."""
        b, below = _rank_bin(hist, r)
        sub = np.empty(hist[b], dtype=row.dtype)
        at = 0
        for v in row:
            if (v >> 20) == b:
                sub[at] = v
                at += 1
        return np.partition(sub, r - below)[r - below]

    @numba.njit(parallel=True, cache=True)
    def _sample_band(sample, tops, bottoms, his, los, inside):
        """Per row i with tops[i] > -2 (rows in parallel): his[i] and los[i], the sample's
        values at descending positions tops[i] and bottoms[i] (int64 max above the top,
        0 below the bottom, as positions outside the sample), and inside[i], the sample's
        count in [max(los[i], 1), his[i]] (zeros are not collected)."""
        k, size = sample.shape
        for i in numba.prange(k):
            if tops[i] < -1:
                continue
            row = sample[i]
            hist = np.zeros(1 << 11, dtype=np.int64)
            for v in row:
                hist[v >> 20] += 1
            top, bottom = tops[i], bottoms[i]
            his[i] = np.iinfo(np.int64).max
            if top >= 0:
                his[i] = _nth(row, hist, size - 1 - top)
            los[i] = 0
            if bottom < size:
                los[i] = _nth(row, hist, size - 1 - bottom)
            lo = max(los[i], 1)
            count = 0
            for j in range(size):
                count += (row[j] >= lo) & (row[j] <= his[i])
            inside[i] = count


def _like(dtype: torch.dtype) -> np.ndarray:
    return np.empty(0, dtype=np.uint16 if dtype == torch.bfloat16 else np.float32)


def _addrs(views) -> np.ndarray:
    return np.asarray([v.data_ptr() for v in views], dtype=np.uint64)


# the band search's sample: about this many elements per tensor, in runs of RUN contiguous
# elements evenly spaced (a run is two cache lines of bf16: the sample reads little)
SAMPLE = 1 << 16
MIN_SAMPLE = 1 << 12
RUN = 64
# the band reaches this many standard deviations of the sampled quantile either side. A
# sample that misled costs speed, never bytes: the search declines and the histogram passes
# answer exactly. 3 (was 5) keeps 60% of the band's keys; over the K=8 bench inputs no tensor
# declined at either
SPREAD = 3.0
# keys the band search may hold at once (8 bytes each: 128 MiB)
KEY_BUDGET = 1 << 24


def _sample_mags(chunks, numel: int, k: int, like: np.ndarray) -> np.ndarray:
    """|tau| bits (int32) of each row at the elements j with j % stride < RUN (runs cut by
    a chunk's end are left out): [k, about SAMPLE]; the whole tensor when it is smaller.
    Read by address in a numba kernel (torch's strided conversions took a single thread)."""
    size = min(SAMPLE, max(MIN_SAMPLE, numel // 64))  # a thin sample of a large tensor
    stride = max(RUN, numel // (size // RUN) // RUN * RUN)
    parts = []
    for start, subs, base in chunks():
        n = base.numel()
        if stride == RUN:  # every element: one run of the whole chunk
            parts.append((_addrs(subs), base.data_ptr(), 0, n, 1 if n else 0, n))
            continue
        first = (-start) % stride
        runs = (n - first) // stride + ((n - first) % stride >= RUN)
        if runs > 0:
            parts.append((_addrs(subs), base.data_ptr(), first, stride, runs, RUN))
    out = np.empty((k, sum(runs * width for *_, runs, width in parts)), dtype=np.int32)
    col = 0
    for addrs, base_addr, first, stride_, runs, width in parts:
        _sample_runs(addrs, base_addr, like, first, stride_, runs, width, out, col)
        col += runs * width
    return out


def band_kth_largest(chunks, numel: int, ks: list[int], salts: list[int],
                     dtype: torch.dtype) -> list[int] | None:
    """topk.kth_largest in one pass over the tensor where a sample tells where to look, or
    topk.NONZERO where the k-th largest |tau| is 0.

    An evenly spaced sample of each row's |tau| bits (SAMPLE elements in runs) puts the k-th
    largest near sample position p = k / numel * S; the band [lo, hi] of |tau| bits runs
    from the sample value SPREAD standard deviations of a sampled quantile
    (sqrt(S q (1 - q)) positions, plus 8) below p to as many above. One pass then counts,
    per row, the elements above the band and collects the keys inside it; when the k-th
    largest falls in the band (above < k <= above + band), it is the (k - above)-th
    largest key there: the same key as the exhaustive search, since every key above the
    band is larger and every key below it smaller. Otherwise (a sample that misled, or a
    band larger than planned) None: the caller takes the histogram passes.

    The band never holds |tau| = 0: a fine-tuning's task vectors in bf16 are often mostly
    exact zeros (an update below half a bf16 step of the weight leaves it unchanged), far
    more than any segment could collect, and the exact k-th largest key among them is a
    tie broken by the index hash. When the band reaches down to 0 and the nonzero entries
    (above it and in it, all counted) are fewer than k, the k-th largest is a zero: the
    answer is topk.NONZERO, which keeps every nonzero entry and no zero. TIES' outputs are
    the same bytes either way (topk.NONZERO's comment); only the count of kept entries
    differs, by the zeros."""
    k = len(ks)
    like = _like(dtype)
    out: list[int | None] = [None] * k
    sample = _sample_mags(chunks, numel, k, like)
    size = sample.shape[1]
    # nothing above and an empty band (lo > hi) for the rows settled here
    his = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
    los = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
    caps = np.zeros(k, dtype=np.int64)
    tops = np.full(k, -2, dtype=np.int64)  # -2: a row settled without the sample
    bottoms = np.zeros(k, dtype=np.int64)
    for i, want in enumerate(ks):
        if want >= numel:
            out[i] = topk.KEEP_ALL
        elif want <= 0:
            out[i] = topk.KEEP_NONE
        if out[i] is not None or size == 0:
            continue
        q = want / numel
        p = q * size
        margin = SPREAD * (size * q * (1 - q)) ** 0.5 + 8
        # the band's ends as positions in descending order
        tops[i], bottoms[i] = max(-1, math.floor(p - margin)), math.ceil(p + margin)
    if all(o is not None for o in out):
        return out
    inside = np.zeros(k, dtype=np.int64)
    _sample_band(sample, tops, bottoms, his, los, inside)
    to_zero = los == 0  # the band reaches down to |tau| = 0
    for i in range(k):
        if tops[i] < -1:
            continue
        los[i] = max(los[i], 1)  # zeros are counted as what remains (docstring), not collected
        # the band's share of the sample (ties included: bf16 task vectors repeat values),
        # with room for a sample that was short
        caps[i] = min(numel, int(1.5 * inside[i] / size * numel) + 4096)
    # each thread's part of the tensor collects into segments of its own, sized for its
    # share (a part holding more of the band than that declines: the histogram passes)
    parts = max(1, numba.get_num_threads())
    caps = np.minimum(caps, caps // parts + 4096)
    if caps.sum() * parts > KEY_BUDGET:  # a tie too large to collect
        return None
    offsets = (np.arange(parts)[:, None] * caps.sum()
               + np.concatenate([[0], np.cumsum(caps)[:-1]])[None, :]).astype(np.int64)
    keys = np.empty(parts * int(caps.sum()), dtype=np.int64)
    filled = np.zeros((parts, k), dtype=np.int64)
    above = np.zeros((parts, k), dtype=np.int64)
    salts_u = np.asarray(salts, dtype=np.uint64)
    for start, subs, base in chunks():
        _band(_addrs(subs), base.data_ptr(), like, base.numel(), start, his, los, salts_u, keys,
              offsets, caps, filled, above)
    ranks = np.full(k, -1, dtype=np.int64)
    for i, want in enumerate(ks):
        if out[i] is not None:
            continue
        need = want - int(above[:, i].sum())
        inside = int(filled[:, i].sum())
        if (filled[:, i] > caps[i]).any() or need < 1:
            return None
        if need > inside:
            if not to_zero[i]:
                return None
            out[i] = topk.NONZERO  # fewer than k nonzero entries: the k-th largest is a 0
            continue
        ranks[i] = inside - need  # the need-th largest, as an ascending rank
    found = np.zeros(k, dtype=np.int64)
    _select(keys, offsets, filled, ranks, los, his, found)
    return [o if o is not None else int(found[i]) for i, o in enumerate(out)]


def magnitude_cuts(chunks, info, ks: list[int], salts: list[int], plan) -> list[int]:
    """Each sub-model's ks[i]-th largest |tau| key over the tensor (topk.kth_largest), for
    TIES' trim and Breadcrumbs' cuts: this module's band pass or histogram passes on the
    CPU, else topk's radix passes in torch."""
    from .taskvec import tau_of
    if plan.dev.type == "cpu" and available(info.torch_dtype, None):
        found = kth_largest(chunks, info.numel, ks, salts, info.torch_dtype)
        if found is not None:
            return found

    def mags():
        for start, subs, base in chunks():
            yield start, topk.magnitude_bits(tau_of(subs, base))
    return topk.kth_largest(mags, info.numel, ks, salts)


def kth_largest(chunks, numel: int, ks: list[int], salts: list[int], dtype: torch.dtype,
                limit: int = 1 << 24) -> list[int] | None:
    """topk.kth_largest over the raw chunks (start, K views, base view): the band search
    (one pass), else a histogram pass and a collecting pass in numba. None when some bin
    holds more than `limit` elements (the caller then takes topk's radix passes)."""
    found = band_kth_largest(chunks, numel, ks, salts, dtype)
    if found is not None:
        return found
    return histogram_kth_largest(chunks, numel, ks, salts, dtype, limit)


def histogram_kth_largest(chunks, numel: int, ks: list[int], salts: list[int],
                          dtype: torch.dtype, limit: int = 1 << 24) -> list[int] | None:
    """topk.kth_largest over the raw chunks: a histogram of each row's |tau| bits' top 16
    bits, then the keys in the k-th largest's bin collected and sorted. None when some bin
    holds more than `limit` elements."""
    k = len(ks)
    like = _like(dtype)
    parts = max(1, numba.get_num_threads())
    hist = np.zeros((k, 1 << 16), dtype=np.int64)
    part = np.empty((parts, k, 1 << 16), dtype=np.int32)  # per call: a chunk's counts fit
    for start, subs, base in chunks():
        part.fill(0)
        _mag_hist(_addrs(subs), base.data_ptr(), like, base.numel(), part)
        hist += part.sum(0)
    bins, need, out = np.full(k, -1, dtype=np.int64), [0] * k, [None] * k
    for i, want in enumerate(ks):
        if want >= numel:
            out[i] = topk.KEEP_ALL
        elif want <= 0:
            out[i] = topk.KEEP_NONE
        else:
            down = np.cumsum(hist[i][::-1])
            pos = int(np.searchsorted(down, want))  # first top-down bin reaching `want`
            bins[i] = (1 << 16) - 1 - pos
            need[i] = want - (int(down[pos - 1]) if pos else 0)
    sizes = np.array([hist[i][b] if b >= 0 else 0 for i, b in enumerate(bins)], dtype=np.int64)
    if sizes.max(initial=0) > limit:
        return None
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    keys = np.empty(int(sizes.sum()), dtype=np.int64)
    filled = np.zeros(k, dtype=np.int64)
    salts_u = np.asarray(salts, dtype=np.uint64)
    for start, subs, base in chunks():
        _collect(_addrs(subs), base.data_ptr(), like, base.numel(), start, bins, salts_u, keys,
                 offsets, filled)
    for i in range(k):
        if out[i] is None:
            row = np.sort(keys[offsets[i]:offsets[i] + sizes[i]])[::-1]
            out[i] = int(row[need[i] - 1])
    return out


def run(c, thresholds=None, salts=None, dare_keys=None, dare_cut=0, scales=None):
    """The fused merge of chunk `c` (addresses set) for c.method."""
    k = len(c.addrs)
    out = torch.empty(c.n, dtype=c.dtype) if c.out is None else c.out
    if c.n == 0:
        return out, {"nonfinite": 0}
    mode = get(c.method).fused_tv_mode  # the method's registry entry
    target = fused._bits_view(out, np.uint16) if c.dtype == torch.bfloat16 else out.numpy()
    kept = np.zeros((c.n + BLOCK - 1) // BLOCK, dtype=np.int64)
    f32 = np.float32
    bad = _merge_tv(np.asarray(c.addrs, dtype=np.uint64), c.base_addr, target, c.start, mode,
              np.asarray(c.weights, dtype=f32), f32(c.settings["lambda"]),
              bool(c.settings.get("normalize", False)),
              np.asarray(thresholds if thresholds is not None else [0] * k, dtype=np.int64),
              np.asarray(salts if salts is not None else [0] * k, dtype=np.uint64),
              np.asarray(dare_keys if dare_keys is not None else [0] * k, dtype=np.uint64),
              np.uint64(dare_cut), np.asarray(scales if scales is not None else [1.0] * k, dtype=f32),
              kept, c.check)
    return out, {"nonfinite": int(bad), **({"kept": int(kept.sum())} if mode else {})}
