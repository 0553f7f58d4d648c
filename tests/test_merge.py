import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from ordermerge.merge import average, parse_method_id, method_id, resample, select
from ordermerge.merge.engine import MergeError, merge
from ordermerge.merge.rng import choices, uniforms

shapes = st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple)


def stack_of(k, shape, seed, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((k, *shape), generator=g).to(dtype)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 6), shape=shapes, seed=st.integers(0, 2**31))
def test_average_is_the_float64_mean_within_bf16_rounding(k, shape, seed):
    subs = stack_of(k, shape, seed)
    out = average.merge_chunk(subs, [1.0 / k] * k)
    assert out.dtype == torch.bfloat16
    exact = subs.to(torch.float64).mean(0)
    # one bf16 rounding of the float64 mean: half an ulp, 2**-8 relative
    assert torch.all((out.to(torch.float64) - exact).abs() <= exact.abs() * 2**-8 + 1e-30)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(2, 6), shape=shapes, seed=st.integers(0, 2**31), mseed=st.integers(0, 99))
def test_every_selected_element_is_that_element_of_some_sub_model(k, shape, seed, mseed):
    subs = stack_of(k, shape, seed)
    out = select.merge_chunk(subs, [1.0 / k] * k, seed=mseed, name="w", offset=0)
    assert out.shape == subs.shape[1:]
    assert torch.all((subs == out.unsqueeze(0)).any(0))


@settings(max_examples=60, deadline=None)
@given(k=st.integers(2, 5), n=st.integers(0, 4), seed=st.integers(0, 2**31), mseed=st.integers(0, 99))
def test_resample_replaces_only_elements_equal_to_the_base(k, n, seed, mseed):
    shape = (64,)
    base = stack_of(1, shape, seed)[0]
    subs = base.repeat(k, 1)
    changed = torch.rand((k, *shape), generator=torch.Generator().manual_seed(seed + 1)) < 0.4
    subs = torch.where(changed, subs + 1.0, subs)
    probs = [1.0 / k] * k
    sel = select.merge_chunk(subs, probs, seed=mseed, name="w", offset=0)
    res = resample.merge_chunk(subs, base, probs, rounds=n, seed=mseed, name="w", offset=0)
    kept = sel != base
    assert torch.equal(res[kept], sel[kept])
    assert torch.all((subs == res.unsqueeze(0)).any(0))
    # resampling never increases the elements left at the base
    assert int((res == base).sum()) <= int((sel == base).sum())
    if n == 0:
        assert torch.equal(res, sel)


def test_resample_equal_to_base_fraction_matches_closed_form():
    # an element whose K sub-model values hold m equal to the base stays at the base with
    # probability (m/K)^(n+1) (every round redraws from all K, the same one included);
    # with each value equal to the base independently with probability q, m ~ Binomial(K, q)
    from math import comb
    k, size, q = 4, 200_000, 0.5
    g = torch.Generator().manual_seed(0)
    base = torch.zeros(size)
    subs = torch.where(torch.rand(k, size, generator=g) < q, 0.0, 1.0)
    for n in (0, 1, 3):
        res = resample.merge_chunk(subs, base, [0.25] * 4, rounds=n, seed=7, name="x", offset=0)
        frac = float((res == 0).float().mean())
        expected = sum(comb(k, m) * q**m * (1 - q) ** (k - m) * (m / k) ** (n + 1)
                       for m in range(k + 1))
        # binomial standard error at 200k elements is about 1e-3
        assert abs(frac - expected) < 5e-3, (n, frac, expected)


def test_selection_frequencies_match_probabilities():
    probs = [0.1, 0.2, 0.3, 0.4]
    counts = np.bincount(choices(3, "t", 0, 0, 100_000, probs).numpy(), minlength=4)
    expected = np.array(probs) * 100_000
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.27  # chi-square, 3 dof, p = 1e-3


def test_draws_are_counter_based():
    whole = uniforms(5, "layer.w", 0, 0, 1000)
    parts = np.concatenate([uniforms(5, "layer.w", 0, o, 100) for o in range(0, 1000, 100)])
    assert np.array_equal(whole, parts)
    assert not np.array_equal(whole, uniforms(5, "layer.v", 0, 0, 1000))
    assert not np.array_equal(whole, uniforms(6, "layer.w", 0, 0, 1000))
    assert whole.min() >= 0 and whole.max() < 1


def test_method_ids_round_trip():
    for m, kw in [("average", {}), ("select", {"seed": 3}), ("resample", {"rounds": 4, "seed": 3})]:
        assert parse_method_id(method_id(m, **kw)) == (m, kw)
    with pytest.raises(ValueError, match="not a merge method id"):
        parse_method_id("resample-s3")


def write_ckpt(path, tensors):
    path.mkdir(parents=True)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    return path


@pytest.fixture
def ckpts(tmp_path):
    base = {"a": torch.zeros(4, 3, dtype=torch.bfloat16), "n": torch.arange(3)}
    subs = []
    for i in range(3):
        t = {"a": torch.full((4, 3), float(i), dtype=torch.bfloat16), "n": torch.arange(3)}
        subs.append(write_ckpt(tmp_path / f"s{i}", t))
    return write_ckpt(tmp_path / "base", base), subs


def test_engine_writes_a_model_directory(ckpts, tmp_path):
    base, subs = ckpts
    recipe = merge("resample", subs, tmp_path / "out", base=base, seed=1, rounds=2)
    assert (tmp_path / "out" / "config.json").is_file()
    assert recipe["stats"]["tensors"] == 1 and recipe["rounds"] == 2
    from safetensors.torch import load_file
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(out["n"], torch.arange(3))
    assert set(out["a"].float().unique().tolist()) <= {0.0, 1.0, 2.0}


@pytest.mark.parametrize("case,match", [
    ("k1", "at least 2 sub-models"),
    ("nobase", "needs the base"),
    ("weights", "3 sub-models"),
    ("missing", "tensor 'b'"),
    ("shape", "tensor 'a'"),
    ("corrupt", "not a readable safetensors"),
    ("intdiff", "non-float tensor 'n'"),
])
def test_engine_errors_name_the_problem(ckpts, tmp_path, case, match):
    base, subs = ckpts
    kw = {"base": base, "seed": 0, "rounds": 1}
    method = "resample"
    if case == "k1":
        subs = subs[:1]
    elif case == "nobase":
        kw["base"] = None
    elif case == "weights":
        kw["weights"] = [0.5, 0.5]
    elif case == "missing":
        write_ckpt(tmp_path / "m", {"a": torch.zeros(4, 3, dtype=torch.bfloat16),
                                    "b": torch.zeros(1), "n": torch.arange(3)})
        subs = subs[:2] + [tmp_path / "m"]
    elif case == "shape":
        write_ckpt(tmp_path / "m", {"a": torch.zeros(3, 4, dtype=torch.bfloat16), "n": torch.arange(3)})
        subs = subs[:2] + [tmp_path / "m"]
    elif case == "corrupt":
        data = (subs[2] / "model.safetensors").read_bytes()
        (subs[2] / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif case == "intdiff":
        write_ckpt(tmp_path / "m", {"a": torch.zeros(4, 3, dtype=torch.bfloat16), "n": torch.arange(1, 4)})
        subs = subs[:2] + [tmp_path / "m"]
    with pytest.raises(MergeError, match=match):
        merge(method, subs, tmp_path / "out", **kw)


@pytest.mark.parametrize("method,kw", [("average", {}), ("select", {"seed": 3}),
                                       ("resample", {"seed": 3, "rounds": 2})])
def test_merging_identical_sub_models_gives_them_back(tmp_path, method, kw):
    t = {"w": torch.randn(5, 7).to(torch.bfloat16), "b": torch.randn(7).to(torch.bfloat16)}
    subs = [write_ckpt(tmp_path / f"s{i}", t) for i in range(3)]
    base = write_ckpt(tmp_path / "base", {k: torch.zeros_like(v) for k, v in t.items()})
    merge(method, subs, tmp_path / "out", base=base, **kw)
    from safetensors.torch import load_file
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(torch.equal(out[k], t[k]) for k in t)
