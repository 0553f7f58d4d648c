"""Fused CPU kernels (numba) for all three methods, bit-identical to the torch path.

The kernels read the K inputs in place through their addresses (the engine
passes the addresses of the mapped checkpoint files), so nothing is copied
into a stack and K is not limited. Each kernel runs in parallel over blocks;
a block's temporaries (draws, picks, positions, float32 accumulators) stay in
the cache. Mapped files put element j of every input at the same offset
within its page, and reading K inputs at once, a few KiB of each, was about
2.5x slower than the same reads from anonymous memory (AMD EPYC, K=8): the
average, select and resample kernels read one or two inputs at a time, in
runs of their wide blocks (AVG_BLOCK, SEL_BLOCK).

- average: the float32 sum in sub-model order, two inputs per pass over the
  block; cast once, NaN written as the positive quiet NaN.
- select / resample: vectorised SplitMix64 draws (rng.py) for the block,
  picks, then one pass per input that writes the elements picked from it (a
  vectorised blend). Resample flags the elements equal to the base, compresses
  their positions (AVX-512's vpcompressd where the CPU has it) and redraws
  only those, for each round, gathering from the inputs drawn.

Values are moved as raw bits (uint16 for bf16/fp16, uint32 for fp32); "equal
to the base" is float equality on those bits (+0 == -0, NaN never equal), as
torch's `==` decides it.

The NaN/Inf check is part of each kernel's pass (check=True), so a checked merge reads
nothing twice. Select and resample read every input element in their per-input passes
and take the largest |bits| there (and of the base's block), one vectorised max; it is
taken whether or not the check is asked for (without it LLVM made the blend a branch).
The average tests what it writes instead: with finite weights, a NaN or Inf input makes the float32 sum NaN or Inf (x * w is NaN or Inf, and
so is every sum with it), so the output is non-finite wherever an input is, and also
where finite inputs overflowed. The kernels return how many blocks (select, resample)
or elements (average) failed; the engine then finds the first one and names it.

Used when numba is installed; otherwise the engine falls back to the torch methods, which
give the same bytes (tests check it).
"""
from __future__ import annotations

import numpy as np
import torch

try:
    import numba
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic, overload
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

from .rng import BITS, GOLDEN, Sampler, offset_key

_BITS_DTYPE = {torch.bfloat16: (np.uint16, 0x7FFF, 0x7F80), torch.float16: (np.uint16, 0x7FFF, 0x7C00),
               torch.float32: (np.uint32, 0x7FFFFFFF, 0x7F800000)}
# elements per block of the task-vector, Gram and band kernels (fused_tv.py, _gram): their
# float32 and int64 rows of a block stay in the first-level cache; the Gram matrix's bytes
# depend on it (blocks are summed in order)
BLOCK = 2048
# elements per block of the average's kernel (its float32 accumulator, 128 KiB) and of
# select and resample's (draws, picks, positions and flags, 17 B an element: 272 KiB); both
# stay in the second-level cache, and each input is read in runs this long (module docstring)
AVG_BLOCK = 1 << 15
SEL_BLOCK = 1 << 14
# lanes of one vector compress (_compress): 16 int32 positions, one AVX-512 register
LANES = 16


def set_threads(n: int) -> None:
    """Threads for the kernels (at most numba's pool size); the bytes do not depend on it."""
    if numba is not None:
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def available(dtype: torch.dtype) -> bool:
    """select and resample: bf16, fp16 and fp32."""
    return numba is not None and dtype in _BITS_DTYPE


def average_available(dtype: torch.dtype) -> bool:
    """average: bf16 and fp32 (fp16 takes the torch path)."""
    return numba is not None and dtype in (torch.bfloat16, torch.float32)


if numba is not None:
    _u64 = numba.uint64

    @intrinsic
    def _load(typingctx, addr, index, like):
        """The element `index` of the array at address `addr`, of `like`'s element type."""
        if not (isinstance(addr, types.Integer) and isinstance(index, types.Integer)
                and isinstance(like, types.Array)):
            return None
        sig = like.dtype(addr, index, like)

        def codegen(context, builder, signature, args):
            a, i, _ = args
            ptr = builder.inttoptr(a, context.get_value_type(signature.return_type).as_pointer())
            i = context.cast(builder, i, signature.args[1], types.int64)
            return builder.load(builder.gep(ptr, [i]), align=1)
        return sig, codegen

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

    def _widen(x):
        """An element as float32 (exact)."""

    @overload(_widen, inline="always")
    def _widen_impl(x):
        if x == types.uint16:  # bf16 bits
            return lambda x: _as_f32(numba.uint32(x) << numba.uint32(16))
        if x == types.float32:
            return lambda x: x

    def _narrow(f, like):
        """float32 to `like`'s element type, rounding once; NaN as the positive quiet NaN."""

    @overload(_narrow, inline="always")
    def _narrow_impl(f, like):
        if like.dtype == types.uint16:
            def to_bf16(f, like):
                # round to nearest, ties to even (torch's conversion)
                u = _as_u32(f)
                r = numba.uint16((u + numba.uint32(0x7FFF) + ((u >> numba.uint32(16)) & numba.uint32(1)))
                                 >> numba.uint32(16))
                return numba.uint16(0x7FC0) if f != f else r
            return to_bf16
        if like.dtype == types.float32:
            return lambda f, like: np.float32(np.nan) if f != f else f

    @numba.njit(inline="always")
    def _block(bi, n):
        """Block bi of n elements: its first element and its length."""
        lo = bi * BLOCK
        return lo, min(n, lo + BLOCK) - lo

    @numba.njit(inline="always")
    def _part(p, parts, blocks):
        """Thread p's contiguous run of `blocks` blocks (of `parts` runs): first, end."""
        per = (blocks + parts - 1) // parts
        return p * per, min(blocks, (p + 1) * per)

    @numba.njit(inline="always")
    def _widen_into(dst, addr, lo, m, like):
        """dst[:m] = elements lo .. lo+m-1 at `addr` (`like`'s element type) as float32."""
        for t in range(m):
            dst[t] = _widen(_load(addr, lo + t, like))

    @numba.njit(inline="always")
    def _draw(key_plus_golden, index):
        z = index * _u64(GOLDEN) + key_plus_golden
        z = (z ^ (z >> _u64(30))) * _u64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _u64(27))) * _u64(0x94D049BB133111EB)
        z = z ^ (z >> _u64(31))
        return z >> _u64(64 - BITS)

    @numba.njit(inline="always")
    def _float_equal(a, b, abs_mask, inf_bits):
        # same bits and not NaN, or both zeros of either sign; bitwise & and | on the
        # comparisons keep it free of branches
        return ((a == b) & ((a & abs_mask) <= inf_bits)) | (((a | b) & abs_mask) == 0)

    @numba.njit(inline="always")
    def _picks(key, first, pos, cnt, contiguous, k, uniform, cuts, u, picks):
        """picks[t] = the sub-model drawn for element first + t (contiguous) or
        first + pos[t]; separate simple loops, so each is vectorised."""
        if contiguous:
            for t in range(cnt):
                u[t] = _draw(key, first + _u64(t))
        else:
            for t in range(cnt):
                u[t] = _draw(key, first + _u64(pos[t]))
        if uniform:
            # #{j : ceil(j 2**53 / K) <= u} = floor(u K / 2**53) (rng.Sampler)
            for t in range(cnt):
                picks[t] = (u[t] * _u64(k)) >> _u64(BITS)
        else:
            for t in range(cnt):
                picks[t] = 0
            for c in cuts:
                for t in range(cnt):
                    picks[t] += u[t] >= c
        return picks

    @intrinsic
    def _and(typingctx, x, mask):
        """x & mask in x's own integer type (numba widens `&` to 64 bits, which would take
        the vectorised max of _take and _flag_equal from 32 lanes to 8)."""
        if x != mask or not isinstance(x, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            return builder.and_(args[0], args[1])
        return x(x, mask), codegen

    @intrinsic
    def _compress(typingctx, src, flags, s0, dst, c):
        """dst[c:] = those of src[s0:s0 + LANES] whose flags[s0:s0 + LANES] are nonzero, in
        order; returns c + how many (int32 src and dst, uint8 flags). One vector compress
        (LLVM's vector.compress: AVX-512's vpcompressd in a register, a select sequence
        elsewhere) and one LANES-wide store, so dst needs LANES elements of room past what
        it keeps; dst may be src (c <= s0: the lanes are read before the store)."""
        if not (isinstance(src, types.Array) and src.dtype == types.int32 and src == dst
                and isinstance(flags, types.Array) and flags.dtype == types.uint8):
            return None
        sig = types.int64(src, flags, types.int64, dst, types.int64)

        def codegen(context, builder, signature, args):
            from numba.core import cgutils
            i32 = ir.IntType(32)
            v8, v32 = ir.VectorType(ir.IntType(8), LANES), ir.VectorType(i32, LANES)
            lanes = ir.VectorType(ir.IntType(1), LANES)
            src_a, flag_a, _, dst_a, _ = (context.make_array(t)(context, builder, v)
                                          if isinstance(t, types.Array) else None
                                          for t, v in zip(signature.args, args))
            s0, c = args[2], args[4]
            values = builder.load(builder.bitcast(builder.gep(src_a.data, [s0]), v32.as_pointer()),
                                  align=4)
            bits = builder.load(builder.bitcast(builder.gep(flag_a.data, [s0]), v8.as_pointer()),
                                align=1)
            keep = builder.icmp_unsigned("!=", bits, ir.Constant(v8, None))
            compress = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v32, [v32, lanes, v32]),
                f"llvm.experimental.vector.compress.v{LANES}i32")
            kept = builder.call(compress, [values, keep, ir.Constant(v32, ir.Undefined)])
            builder.store(kept, builder.bitcast(builder.gep(dst_a.data, [c]), v32.as_pointer()),
                          align=4)
            ctpop = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(LANES)])
            count = builder.call(ctpop, [builder.bitcast(keep, ir.IntType(LANES))])
            return builder.add(c, builder.zext(count, ir.IntType(64)))
        return sig, codegen

    @numba.njit(inline="always")
    def _where(src, flags, m, dst):
        """dst[:c] = src[t] for the t < m whose flags[t] are nonzero, in order; returns c.
        src, flags and dst hold m + LANES elements (flags[m:m + LANES] are zeroed here);
        dst may be src."""
        for t in range(m, m + LANES):
            flags[t] = 0
        c = 0
        for s0 in range(0, m, LANES):
            c = _compress(src, flags, s0, dst, c)
        return c

    def _nonfinite(x):
        """1 where the bf16 bits or float32 value x is NaN or Inf, else 0."""

    @overload(_nonfinite, inline="always")
    def _nonfinite_impl(x):
        if x == types.uint16:  # bf16 bits
            return lambda x: np.int64((x & numba.uint16(0x7FFF)) >= numba.uint16(0x7F80))
        if x == types.float32:
            return lambda x: np.int64((_as_u32(x) & numba.uint32(0x7FFFFFFF))
                                      >= numba.uint32(0x7F800000))

    @numba.njit
    def _take(o, a, lo, m, picks, mine, worst, abs_mask, like):
        """o[t] = element lo + t at address a where picks[t] is `mine`, and the larger of
        `worst` and the largest |bits| of the m elements read: one vectorised loop (without
        the max, LLVM made the blend a branch per element, about 4x slower)."""
        for t in range(m):
            v = _load(a, lo + t, like)
            worst = max(worst, _and(v, abs_mask))
            o[t] = v if picks[t] == mine else o[t]
        return worst

    @numba.njit
    def _flag_equal(o, base_addr, lo, m, flags, worst, abs_mask, inf_bits, like):
        """flags[t] = o[t] equals element lo + t of the base (float equality on the bits),
        and the larger of `worst` and the largest |bits| of the base's m elements."""
        for t in range(m):
            b = _load(base_addr, lo + t, like)
            worst = max(worst, _and(b, abs_mask))
            flags[t] = _float_equal(o[t], b, abs_mask, inf_bits)
        return worst

    @numba.njit(parallel=True, cache=True)
    def _merge(addrs, base_addr, out, keys, start, uniform, cuts, abs_mask, inf_bits, check,
               parts):
        """Select (base_addr 0) or resample over the chunk of n = len(out) elements whose
        element j of input i is at addrs[i] + j * itemsize; keys[r] = the key of round r plus
        phi, len(keys) - 1 resample rounds. Returns how many elements still equal the base
        (0 without one) and, with `check`, how many blocks hold a NaN or Inf in an input or
        the base. Each of `parts` threads takes a contiguous run of blocks of SEL_BLOCK
        elements and keeps its buffers.

        Per block: the draws and picks, then one pass per input that writes the elements it
        was picked for (a vectorised blend) and, with `check`, takes its largest |bits|: each
        input is read once, in one long run (reading all K at once, a few KiB of each, is
        about 2.5x slower from mapped files: _average says why). Resample then flags the
        elements equal to the base, compresses their positions (fused._where) and redraws
        only those, each round gathering from the inputs drawn."""
        k = addrs.shape[0]
        n = out.shape[0]
        rounds = len(keys) - 1
        blocks = (n + SEL_BLOCK - 1) // SEL_BLOCK
        left = 0
        bad = 0
        for p in numba.prange(parts):
            u = np.empty(SEL_BLOCK, dtype=np.uint64)
            picks = np.empty(SEL_BLOCK, dtype=np.uint32)  # unsigned: addrs[picks[t]] needs no test
            pos = np.empty(SEL_BLOCK + LANES, dtype=np.int32)  # room for _where's last store
            flags = np.empty(SEL_BLOCK + LANES, dtype=np.uint8)
            iota = np.arange(SEL_BLOCK + LANES).astype(np.int32)
            first_block, end_block = _part(p, parts, blocks)
            for bi in range(first_block, end_block):
                lo = bi * SEL_BLOCK
                m = min(n, lo + SEL_BLOCK) - lo
                first = start + _u64(lo)
                _picks(keys[0], first, pos, m, True, k, uniform, cuts, u, picks)
                o = out[lo:lo + m]  # indexed from 0: no negative-index test, so loops vectorise
                # one of the elements the max takes, in their own integer type
                worst = _and(_load(addrs[0], lo, out), abs_mask)
                for i in range(k):
                    worst = _take(o, addrs[i], lo, m, picks, numba.uint32(i), worst, abs_mask, out)
                if base_addr == 0:
                    bad += check and worst >= inf_bits
                    continue
                # the positions still equal to the base: flags in one vectorised loop (with
                # the base's largest |bits|), then compressed (a loop that appends a
                # position per element stays scalar)
                worst = _flag_equal(o, base_addr, lo, m, flags, worst, abs_mask, inf_bits, out)
                bad += check and worst >= inf_bits
                cnt = _where(iota, flags, m, pos)
                for r in range(1, rounds + 1):
                    if cnt == 0:
                        break
                    _picks(keys[r], first, pos, cnt, False, k, uniform, cuts, u, picks)
                    for s in range(cnt):
                        t = pos[s]
                        v = _load(addrs[picks[s]], lo + t, out)
                        o[t] = v
                        flags[s] = _float_equal(v, _load(base_addr, lo + t, out), abs_mask, inf_bits)
                    cnt = _where(pos, flags, cnt, pos)
                left += cnt
        return left, bad

    @numba.njit(parallel=True, cache=True)
    def _average(addrs, out, weights, divisor, check, base_addr, t_mix, base_mix):
        """out = (sum_i weights[i] * x_i) / divisor in float32, summed in sub-model order;
        with a base (base_addr != 0, Model Stock) then mixed as avg * t_mix + base * base_mix
        (two float32 products and a sum, as model_stock.run computes it). The accumulator
        starts at -0.0, the additive identity for every float (+0.0 would turn a sum of -0.0
        into +0.0); x * 1.0 and x / 1.0 are exact. Returns, with `check`, how many output
        elements are NaN or Inf.

        Blocks of AVG_BLOCK elements (the float32 accumulator, 128 KiB, stays in the
        second-level cache), two inputs per pass over the block: mapped checkpoint files put
        every input's element j at the same offset within its page, so reading many inputs
        at once, a few KiB of each, ran about 2.5x slower than on anonymous memory (AMD EPYC,
        K=8); two long runs at a time read them at the speed of anonymous memory."""
        k = addrs.shape[0]
        n = out.shape[0]
        blocks = (n + AVG_BLOCK - 1) // AVG_BLOCK
        bad = 0
        for bi in numba.prange(blocks):
            lo = bi * AVG_BLOCK
            m = min(n, lo + AVG_BLOCK) - lo
            acc = np.full(m, np.float32(-0.0), dtype=np.float32)
            i = 0
            while i < k:
                if k - i >= 2:
                    a0, a1, w0, w1 = addrs[i], addrs[i + 1], weights[i], weights[i + 1]
                    for t in range(m):
                        j = lo + t
                        acc[t] = (acc[t] + _widen(_load(a0, j, out)) * w0) + _widen(_load(a1, j, out)) * w1
                    i += 2
                else:
                    a0, w0 = addrs[i], weights[i]
                    for t in range(m):
                        acc[t] += _widen(_load(a0, lo + t, out)) * w0
                    i += 1
            nf = 0
            o = out[lo:lo + m]  # indexed from 0: no negative-index test, so the loop vectorises
            if base_addr != 0:
                for t in range(m):
                    acc[t] = (acc[t] / divisor) * t_mix + _widen(_load(base_addr, lo + t, out)) * base_mix
                one = np.float32(1.0)
            else:
                one = divisor
            for t in range(m):  # counted either way: the checked merge runs the same code
                r = _narrow(acc[t] / one, out)
                o[t] = r
                nf += _nonfinite(r)
            bad += nf
        return bad if check else 0


if numba is not None:
    @numba.njit(parallel=True, cache=True)
    def _gram(addrs, base_addr, like, n, partial, parts):
        """partial[b] = the Gram matrix of block b's task vectors (see gram_at). Each of
        `parts` threads takes a contiguous run of blocks and keeps its buffers."""
        k = addrs.shape[0]
        for p in numba.prange(parts):
            tau = np.empty((k, BLOCK), dtype=np.float64)
            b = np.empty(BLOCK, dtype=np.float32)
            first, end = _part(p, parts, partial.shape[0])
            for bi in range(first, end):
                lo, m = _block(bi, n)
                _widen_into(b, base_addr, lo, m, like)
                for i in range(k):
                    a = addrs[i]
                    row = tau[i]
                    for t in range(m):
                        row[t] = np.float64(_widen(_load(a, lo + t, like)) - b[t])
                x = tau if m == BLOCK else tau[:, :m].copy()
                partial[bi] = x @ x.T  # one small BLAS product per block

    @numba.njit(cache=True)
    def _sum_blocks(partial):
        out = np.zeros(partial.shape[1:], dtype=np.float64)
        for bi in range(partial.shape[0]):
            out += partial[bi]
        return out


def thread_parts(blocks: int) -> int:
    """How many contiguous runs a kernel splits `blocks` blocks into: one per thread, at
    least one, at most one per block (each run keeps its own buffers)."""
    return max(1, min(blocks, numba.get_num_threads()))


def _bits_view(t: torch.Tensor, np_dtype) -> np.ndarray:
    torch_bits = torch.int16 if np_dtype == np.uint16 else torch.int32
    return t.view(torch_bits).numpy().view(np_dtype)


def merge_at(addrs: list[int], base_addr: int | None, n: int, dtype: torch.dtype,
             sampler: Sampler, *, rounds: int, seed: int, name: str,
             start: int, check: bool = False,
             out: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
    """select (base_addr None) or resample of elements start .. start+n-1 of tensor `name`,
    whose inputs lie (contiguous, `dtype`) at the addresses `addrs`, the base's at
    `base_addr`. The caller keeps that memory alive. Returns the n merged elements, how
    many still equal the base and (with `check`) how many blocks hold NaN or Inf. `out`: n
    elements of `dtype` to write into (the engine reuses its buffers; a fresh one faults
    in its pages every time)."""
    np_dtype, abs_mask, inf_bits = _BITS_DTYPE[dtype]
    out = torch.empty(n, dtype=dtype) if out is None else out
    if n == 0:
        return out, 0, 0
    rounds = rounds if base_addr is not None else 0
    keys = np.array([offset_key(seed, name, r) for r in range(rounds + 1)], dtype=np.uint64)
    cuts = sampler.cuts.cpu().numpy().astype(np.uint64)
    left, bad = _merge(np.asarray(addrs, dtype=np.uint64), base_addr or 0,
                       _bits_view(out, np_dtype), keys, np.uint64(start), sampler.uniform, cuts,
                       np_dtype(abs_mask), np_dtype(inf_bits), check,
                       thread_parts((n + SEL_BLOCK - 1) // SEL_BLOCK))
    return out, int(left), int(bad)


def average_at(addrs: list[int], n: int, dtype: torch.dtype, weights: list[float],
               check: bool = False, base_addr: int | None = None,
               t: float = 1.0, out: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """The weighted average of n elements of K bf16 or fp32 inputs at `addrs`, as
    average.py computes it: equal weights summed in float32 then divided by K, other
    weights as float32 products added in order, NaN written as the positive quiet NaN.
    With `base_addr`, Model Stock's mix avg * t + base * (1 - t) in float32 (t and 1 - t
    rounded to float32 once). Returns it and (with `check`) how many of its elements are
    NaN or Inf. `out`: as merge_at's."""
    out = torch.empty(n, dtype=dtype) if out is None else out
    if n == 0:
        return out, 0
    k = len(addrs)
    if len(set(weights)) == 1:
        w, divisor = np.ones(k, dtype=np.float32), np.float32(k)
    else:
        w, divisor = np.asarray(weights, dtype=np.float32), np.float32(1.0)
    target = _bits_view(out, np.uint16) if dtype == torch.bfloat16 else out.numpy()
    bad = _average(np.asarray(addrs, dtype=np.uint64), target, w, divisor, check, base_addr or 0,
                   np.float32(t), np.float32(1.0 - t))
    return out, int(bad)


def gram_at(addrs: list[int], base_addr: int, n: int, dtype: torch.dtype) -> np.ndarray:
    """The K x K Gram matrix (float64) of the task vectors tau_i = x_i - base (float32
    differences, as taskvec.tau_of; their products are exact in float64) over n elements
    of bf16 or fp32 inputs at `addrs`. Each block of BLOCK elements (aligned to element 0)
    is one BLAS product, single-threaded at this size, and the blocks are added in order:
    the bytes depend on neither chunking nor threads."""
    k = len(addrs)
    blocks = (n + BLOCK - 1) // BLOCK
    partial = np.zeros((blocks, k, k), dtype=np.float64)
    if n:
        like = np.empty(0, dtype=np.uint16 if dtype == torch.bfloat16 else np.float32)
        _gram(np.asarray(addrs, dtype=np.uint64), base_addr, like, n, partial,
              thread_parts(blocks))
    return _sum_blocks(partial) if blocks else np.zeros((k, k), dtype=np.float64)


def _addresses(views) -> list[int]:
    for v in views:
        if not v.is_contiguous() or v.device.type != "cpu":
            raise ValueError("fused kernels need contiguous CPU tensors")
    return [v.data_ptr() for v in views]


def merge_chunk(views, base: torch.Tensor | None, sampler: Sampler, *, rounds: int, seed: int,
                name: str, start: int) -> tuple[torch.Tensor, int]:
    """merge_at over K contiguous CPU tensors (a list or the rows of a [K, n] stack), no
    NaN/Inf check: the merged elements and how many still equal the base."""
    (b,) = _addresses([base]) if base is not None else (None,)
    out, left, _ = merge_at(_addresses(views), b, views[0].shape[0], views[0].dtype, sampler,
                            rounds=rounds, seed=seed, name=name, start=start)
    return out, left


def average_chunk(views, weights: list[float]) -> torch.Tensor:
    """average_at over K contiguous bf16 or fp32 CPU tensors, no NaN/Inf check."""
    return average_at(_addresses(views), views[0].shape[0], views[0].dtype, weights)[0]
