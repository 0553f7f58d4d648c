"""The merge methods (pure arithmetic over [K, n] stacks) and their counter-based draws."""
from math import comb

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ordermerge.merge import average, fused, resample, rng, select
from ordermerge.merge.methods import method_id, parse_method_id

ks = st.integers(2, 6)


def stack_of(k, n, seed, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((k, n), generator=g).to(dtype)


def uniform_sampler(k):
    return rng.Sampler([1.0 / k] * k)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 6), n=st.integers(1, 300), seed=st.integers(0, 2**31))
def test_average_is_the_float64_mean_within_bf16_rounding(k, n, seed):
    subs = stack_of(k, n, seed)
    out = average.merge_chunk(subs, [1.0 / k] * k)
    assert out.dtype == torch.bfloat16
    exact = subs.to(torch.float64).mean(0)
    # one bf16 rounding (half an ulp: at most 2**-8 relative) of a float32 sum whose own error
    # is at most about k float32 roundings of the largest term
    f32_error = k * 2**-23 * subs.to(torch.float64).abs().max(0).values
    err = (out.to(torch.float64) - exact).abs()
    assert torch.all(err <= (exact.abs() + f32_error) * 2**-8 + f32_error)


@settings(max_examples=60, deadline=None)
@given(k=ks, n=st.integers(1, 300), seed=st.integers(0, 2**31), mseed=st.integers(0, 99),
       start=st.integers(0, 10**6))
def test_every_selected_element_is_that_element_of_some_sub_model(k, n, seed, mseed, start):
    subs = stack_of(k, n, seed)
    out = select.merge_chunk(subs, uniform_sampler(k), seed=mseed, name="w", start=start)
    assert out.shape == (n,)
    assert torch.all((subs == out.unsqueeze(0)).any(0))


@settings(max_examples=60, deadline=None)
@given(k=st.integers(2, 5), n=st.integers(0, 4), seed=st.integers(0, 2**31), mseed=st.integers(0, 99))
def test_resample_replaces_only_elements_equal_to_the_base(k, n, seed, mseed):
    base = stack_of(1, 64, seed)[0]
    changed = torch.rand((k, 64), generator=torch.Generator().manual_seed(seed + 1)) < 0.4
    subs = torch.where(changed, base + 1.0, base)
    sampler = uniform_sampler(k)
    sel = select.merge_chunk(subs, sampler, seed=mseed, name="w", start=0)
    res, left = resample.merge_chunk(subs, base, sampler, rounds=n, seed=mseed, name="w", start=0)
    assert left == int((res == base).sum())
    kept = sel != base
    assert torch.equal(res[kept], sel[kept])
    assert torch.all((subs == res.unsqueeze(0)).any(0))
    assert int((res == base).sum()) <= int((sel == base).sum())
    if n == 0:
        assert torch.equal(res, sel)


def test_resample_equal_to_base_fraction_matches_closed_form():
    # an element whose K sub-model values hold m equal to the base stays at the base with
    # probability (m/K)^(n+1) (every round redraws from all K, the same one included);
    # with each value equal to the base independently with probability q, m ~ Binomial(K, q)
    k, size, q = 4, 200_000, 0.5
    g = torch.Generator().manual_seed(0)
    base = torch.zeros(size)
    subs = torch.where(torch.rand(k, size, generator=g) < q, 0.0, 1.0)
    for n in (0, 1, 3):
        res, _ = resample.merge_chunk(subs, base, uniform_sampler(k), rounds=n, seed=7, name="x",
                                      start=0)
        frac = float((res == 0).float().mean())
        expected = sum(comb(k, m) * q**m * (1 - q) ** (k - m) * (m / k) ** (n + 1)
                       for m in range(k + 1))
        # the binomial standard error at 200k elements is about 1e-3
        assert abs(frac - expected) < 5e-3, (n, frac, expected)


@pytest.mark.parametrize("probs", [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5], [0.0, 0.25, 0.75],
                                   [1 / 3, 1 / 3, 1 / 3]])
def test_selection_frequencies_match_probabilities(probs):
    n = 200_000
    pick = rng.Sampler(probs).choices(3, "t", 0, torch.arange(n))
    counts = np.bincount(pick.numpy(), minlength=len(probs))
    assert len(counts) == len(probs)
    nonzero = [i for i, p in enumerate(probs) if p > 0]
    assert all(counts[i] == 0 for i, p in enumerate(probs) if p == 0)
    expected = np.array([probs[i] for i in nonzero]) * n
    chi2 = float(((counts[nonzero] - expected) ** 2 / expected).sum())
    critical = {1: 10.83, 2: 13.82, 3: 16.27}[len(nonzero) - 1]  # chi-square, p = 1e-3
    assert chi2 < critical


def _reference_draws(seed, name, round_, index):
    """SplitMix64 in numpy uint64, the definition the int64 torch version must match."""
    key = np.uint64(rng.derive_seed(seed, name, round_))
    with np.errstate(over="ignore"):
        z = key + (index.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.int64)


def test_draws_match_the_uint64_definition_and_are_counter_based():
    index = np.arange(0, 5000) * 7919 + 2**40
    want = _reference_draws(5, "layer.w", 2, index)
    assert np.array_equal(rng.draws(5, "layer.w", 2, torch.from_numpy(index)).numpy(), want)
    # the torch int64 version, which runs on GPUs, gives the same bits
    assert np.array_equal(rng._draws_torch(5, "layer.w", 2, torch.from_numpy(index)).numpy(), want)
    whole = rng.draws(5, "w", 0, torch.arange(1000))
    parts = torch.cat([rng.draws(5, "w", 0, torch.arange(o, o + 100)) for o in range(0, 1000, 100)])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, rng.draws(5, "v", 0, torch.arange(1000)))
    assert not torch.equal(whole, rng.draws(6, "w", 0, torch.arange(1000)))
    assert not torch.equal(whole, rng.draws(5, "w", 1, torch.arange(1000)))
    assert int(whole.min()) >= 0 and int(whole.max()) < 2**53


def test_thresholds_are_exact():
    assert rng.thresholds([0.5, 0.5]).tolist() == [2**52]
    assert rng.thresholds([0.25] * 4).tolist() == [2**51, 2**52, 3 * 2**51]
    assert rng.thresholds([0.0, 1.0]).tolist() == [0]


def test_method_ids_round_trip():
    for m, kw in [("average", {}), ("select", {"seed": 3}), ("resample", {"rounds": 4, "seed": 3})]:
        assert parse_method_id(method_id(m, **kw)) == (m, kw)
    with pytest.raises(ValueError, match="not a merge method id"):
        parse_method_id("resample-s3")


@pytest.mark.parametrize("k", [2, 3, 5, 7, 8, 20, 33])
def test_fast_paths_pick_the_same_sub_model_as_the_thresholds(k):
    """The uniform multiply-shift and the comparison sum equal searchsorted on the cut points,
    at the cut points themselves too."""
    cuts = rng.thresholds([1.0 / k] * k)
    edges = torch.cat([cuts - 1, cuts, cuts + 1, torch.tensor([0, 2**53 - 1])])
    u = torch.cat([edges, rng.draws(0, "e", 0, torch.arange(20_000))])
    want = torch.searchsorted(cuts, u, right=True)
    assert torch.equal((u * k) >> 53, want)
    compare = sum((u >= c).to(torch.int64) for c in cuts)
    assert torch.equal(compare, want)
    uniform = rng.Sampler([1.0 / k] * k)
    assert uniform.uniform
    skewed = rng.Sampler([1.0 / k] * (k - 1) + [1.0 - (k - 1) / k])
    idx = torch.arange(5000)
    assert torch.equal(uniform.choices(1, "w", 0, idx),
                       torch.searchsorted(cuts, rng.draws(1, "w", 0, idx), right=True))
    assert torch.equal(skewed.choices(1, "w", 0, idx),
                       torch.searchsorted(skewed.cuts, rng.draws(1, "w", 0, idx), right=True))


@pytest.mark.skipif(not fused.available(torch.bfloat16), reason="numba not installed")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("probs", [[0.25] * 4, [0.1, 0.2, 0.3, 0.4]])
def test_fused_kernel_gives_the_bytes_of_the_unfused_methods(dtype, probs):
    """The numba kernel (CPU) and the torch methods (GPU, or CPU without numba) agree,
    signed zeros and NaN included: 'equal to the base' is float equality."""
    g = torch.Generator().manual_seed(1)
    n = 5000
    base = torch.randn(n, generator=g).to(dtype)
    stack = torch.where(torch.rand(4, n, generator=g) < 0.6, base + 0.5, base).to(dtype)
    edge = torch.tensor([0.0, -0.0, float("nan"), 1.0]).repeat(25).to(dtype)
    stack[:, :100] = edge
    base[:100] = torch.tensor([-0.0, 0.0, float("nan"), 1.0]).repeat(25).to(dtype)
    sampler = rng.Sampler(probs)
    bits = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}[dtype]
    for rounds in (0, 1, 4):
        got, left = fused.merge_chunk(stack, base, sampler, rounds=rounds, seed=5, name="t",
                                      start=777)
        want, want_left = resample.merge_chunk(stack, base, sampler, rounds=rounds, seed=5,
                                               name="t", start=777)
        assert torch.equal(got.view(bits), want.view(bits)) and left == want_left
    got, _ = fused.merge_chunk(stack, None, sampler, rounds=0, seed=5, name="t", start=777)
    want = select.merge_chunk(stack, sampler, seed=5, name="t", start=777)
    assert torch.equal(got.view(bits), want.view(bits))


@pytest.mark.skipif(not fused.average_available(torch.bfloat16), reason="numba not installed")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("k", [2, 3, 8, 13, 20])
def test_fused_average_gives_the_bytes_of_the_torch_average(dtype, k):
    g = torch.Generator().manual_seed(k)
    views = [torch.randn(20_000, generator=g).to(dtype) for _ in range(k)]
    edge = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-40, 3.0e38, -3.0e38]
    views[0][:8] = torch.tensor(edge).to(dtype)
    views[-1][8:16] = torch.tensor(edge).to(dtype)
    bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
    for w in ([1 / k] * k, [(i + 1) / (k * (k + 1) / 2) for i in range(k)]):
        got, want = fused.average_chunk(views, w), average.merge_chunk(views, w)
        assert torch.equal(got.view(bits), want.view(bits))
        assert got.isnan().sum() >= 2


@pytest.mark.skipif(not fused.available(torch.bfloat16), reason="numba not installed")
@pytest.mark.parametrize("method", ["average", "select", "resample"])
def test_fused_kernels_do_not_depend_on_threads_or_where_a_chunk_is_cut(method):
    """Several kernel blocks run on different threads: the bytes are the same with 1 or 2
    threads and for one call or two calls split mid-block, and they are the torch path's."""
    block = fused.AVG_BLOCK if method == "average" else fused.SEL_BLOCK
    k, n = 5, 3 * block + 17
    g = torch.Generator().manual_seed(3)
    base = torch.randn(n, generator=g).to(torch.bfloat16)
    subs = [torch.where(torch.rand(n, generator=g) < 0.6, base + 0.25, base).to(torch.bfloat16)
            for _ in range(k)]
    sampler = uniform_sampler(k)

    def run(lo, hi):
        part = [s[lo:hi] for s in subs]
        if method == "average":
            return fused.average_chunk(part, [1.0 / k] * k), 0
        return fused.merge_chunk(part, base[lo:hi] if method == "resample" else None, sampler,
                                 rounds=3, seed=2, name="w", start=lo)

    results = []
    try:
        for threads in (1, 2):
            fused.set_threads(threads)
            results.append(run(0, n))
        cut = block + 1000
        (a, left_a), (b, left_b) = run(0, cut), run(cut, n)
        results.append((torch.cat([a, b]), left_a + left_b))
    finally:
        fused.set_threads(torch.get_num_threads())
    if method == "average":
        results.append((average.merge_chunk(subs, [1.0 / k] * k), 0))
    else:
        results.append(resample.merge_chunk(torch.stack(subs), base, sampler, rounds=3, seed=2,
                                            name="w", start=0) if method == "resample" else
                       (select.merge_chunk(torch.stack(subs), sampler, seed=2, name="w", start=0), 0))
    (first, left), *others = results
    for out, left_other in others:
        assert torch.equal(out.view(torch.int16), first.view(torch.int16)) and left_other == left
    if method == "resample":
        assert 0 < left < n // 10  # some elements are still at the base after 3 rounds


def test_no_method_name_is_branched_on_outside_the_registry_and_its_own_module():
    """A method's variants (its fused kernel's mode, its memory estimate) are data on its
    registry entry: no other file of the package names a method (no comparison with a name,
    no table keyed by names)."""
    import ast
    from pathlib import Path

    from ordermerge.merge.methods import METHODS
    root = Path(__file__).resolve().parent.parent / "ordermerge"
    own = {name: f"merge/{m.module}.py" for name, m in METHODS.items()}
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "merge/methods.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in METHODS and own[node.value] != rel:
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert found == []
    assert {n for n, m in METHODS.items() if m.fused_tv_mode is not None} == {
        "task_arithmetic", "ties", "dare_linear", "dare_ties"}


def test_the_memory_estimate_of_a_chunk_element_comes_from_the_entry():
    from ordermerge.merge.engine import bytes_per_element
    from ordermerge.merge.methods import METHODS
    for name, m in METHODS.items():
        if m.weights != "task":
            assert bytes_per_element(4, 2, name) == 2 * 4 * 2 + 2 * 2 + m.temp_bytes, name
    assert METHODS["average"].temp_bytes < METHODS["select"].temp_bytes
    assert bytes_per_element(4, 2, "select", fused_path=True) == 4


@pytest.mark.skipif(not fused.available(torch.bfloat16), reason="numba not installed")
@pytest.mark.parametrize("density", [0.0, 0.03, 0.5, 1.0])
def test_where_compresses_the_flagged_positions_in_order(density):
    """fused._where (the vector compress behind resample's redraws and TIES' band): the
    positions of the nonzero flags, in order, for lengths that do and do not fill the last
    group of LANES, from an index list or in place over its own list (resample's rounds)."""
    import numba

    @numba.njit
    def where(src, flags, m, dst):
        return fused._where(src, flags, m, dst)

    g = np.random.default_rng(int(density * 100))
    lanes = fused.LANES
    for m in (1, lanes - 1, lanes, 3 * lanes + 5, 1000):
        flags = np.zeros(m + lanes, dtype=np.uint8)
        flags[:m] = g.random(m) < density
        flags[m:] = 1  # _where must not take what lies past m
        src = g.permutation(4 * m + lanes).astype(np.int32)[:m + lanes]
        dst = np.full(m + lanes, -1, dtype=np.int32)
        c = where(src, flags.copy(), m, dst)
        want = src[:m][flags[:m] == 1]
        assert c == len(want) and (dst[:c] == want).all()
        inplace = src.copy()
        assert where(inplace, flags.copy(), m, inplace) == c and (inplace[:c] == want).all()


def test_every_seeded_method_takes_its_seed_last():
    """The seeds jobs name their merges `{row id}-s{seed}` (rules/merge.smk): the seed is
    every seeded method's last setting, so that row id + -s + seed is the method id."""
    from ordermerge.merge.methods import METHODS
    for m in METHODS.values():
        if m.random:
            assert m.settings[-1].name == "seed", m.name
            assert m.method_id(seed=3) == m.row_id(seed=3) + "-s3", m.name
