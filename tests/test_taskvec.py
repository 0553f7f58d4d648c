"""The task-vector methods (task-arithmetic, TIES, DARE and their selection variants):
each against an independent in-memory reference, mergekit where it is installed, the
exact streaming top-k, DARE's statistics, and byte invariance to chunking."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ordermerge.merge import dare, rng, ties, topk
from ordermerge.merge.methods import METHODS, method_id, parse_method_id
from ordermerge.merge.engine import MergeError, merge
from ordermerge.merge.methods import Chunk
from ordermerge.utils import derive_seed
from ulps import gamma

SHAPES = {"embed.weight": (40, 24), "layers.0.w": (24, 30), "norm": (24,)}


def write(path, ts):
    path.mkdir(parents=True)
    save_file(ts, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"model_type": "toy"}))
    return path


def make(tmp_path, k=3, dtype=torch.bfloat16, step=0.01, moved=0.7, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = {n: torch.randn(s, generator=g).to(dtype) for n, s in SHAPES.items()}
    subs = []
    for i in range(k):
        t = {n: torch.where(torch.rand(b.shape, generator=g) < moved,
                            b.float() + step * torch.randn(b.shape, generator=g), b.float()).to(dtype)
             for n, b in base.items()}
        subs.append(write(tmp_path / f"s{i}", t))
    return write(tmp_path / "base", base), subs


def load(path):
    return load_file(str(path / "model.safetensors"))


def taus(base, subs):
    b = load(base)
    return b, [{n: load(s)[n].double() - b[n].double() for n in b} for s in subs]


def close_in_bf16(got, want64):
    """Within one rounding of the float64 reference to the output dtype. (Tests use weights
    that are exact in float32, so the elected signs cannot differ by a rounding.)"""
    want = want64.to(got.dtype)
    ulp = (want.double().abs() * 2.0 ** -7).clamp(min=2.0 ** -133)
    return bool(((got.double() - want64).abs() <= ulp).all())


def reference_keep(tau64, density, name, i):
    """Top-k by |tau| with ties by the documented hash, via a full sort (not radix)."""
    flat = tau64.reshape(-1)
    n = flat.numel()
    k = n if density >= 1 else max(1, int(density * n))
    mag = torch.from_numpy(np.abs(flat.float().numpy())).view(torch.int32).to(torch.int64)
    salt = derive_seed("ties", name, i) & topk.M32
    h = topk.perm32(torch.arange(n), salt)
    order = np.lexsort((h.numpy(), mag.numpy()))[::-1][:k]
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.from_numpy(order.copy())] = True
    return keep.reshape(tau64.shape)


def reference_ties(b, tau, density, lam, w, normalize):
    out = {}
    for n in b:
        trimmed = [t[n] * reference_keep(t[n], density, n, i) for i, t in enumerate(tau)]
        weighted = torch.stack([wi * t for wi, t in zip(w, trimmed)])
        sign = torch.where(weighted.sum(0) >= 0, 1.0, -1.0).double()
        agree = weighted.sign() == sign
        mixed = (weighted * agree).sum(0)
        if normalize:
            div = (torch.tensor(w, dtype=torch.float64).view(-1, *[1] * sign.dim()) * agree).sum(0)
            mixed = mixed / torch.where(div == 0, 1.0, div)
        out[n] = b[n].double() + lam * mixed
    return out


def test_task_arithmetic_matches_the_reference(tmp_path):
    base, subs = make(tmp_path)
    merge("task_arithmetic", subs, tmp_path / "o", base=base, weights=[0.5, 1.0, 0.25],
          **{"lambda": 0.7})
    b, tau = taus(base, subs)
    got = load(tmp_path / "o")
    for n in b:
        want = b[n].double() + 0.7 * (0.5 * tau[0][n] + tau[1][n] + 0.25 * tau[2][n])
        assert close_in_bf16(got[n], want), n


@pytest.mark.parametrize("density,normalize,w", [(0.2, True, [1.0, 1.0, 1.0]),
                                                 (0.5, True, [0.25, 1.0, 0.5]),
                                                 (0.1, False, [1.0, 2.0, 1.0]),
                                                 (1.0, True, [1.0, 1.0, 1.0])])
def test_ties_matches_the_reference(tmp_path, density, normalize, w):
    base, subs = make(tmp_path)
    r = merge("ties", subs, tmp_path / "o", base=base, weights=w, density=density,
              normalize=normalize, **{"lambda": 0.9}, chunk_elements=97)
    b, tau = taus(base, subs)
    want = reference_ties(b, tau, density, 0.9, w, normalize)
    got = load(tmp_path / "o")
    for n in b:
        assert close_in_bf16(got[n], want[n]), n
    # exactly k per tensor and sub-model, or every nonzero entry where fewer are nonzero
    # (topk.NONZERO: the k-th largest |tau| is 0)
    assert r["stats"]["kept"] == sum(
        b[n].numel() if density >= 1 else min(max(1, int(density * b[n].numel())), int((t[n] != 0).sum()))
        for t in tau for n in b)


def test_ties_keeps_exactly_k_when_bf16_magnitudes_tie(tmp_path):
    """Sub-models moved by one bf16 step: nearly all |tau| tie. Exactly k are kept, the
    same ones for any chunking, as the full-sort reference says."""
    base, subs = make(tmp_path, step=0.0, moved=0.0)
    b = load(base)
    for i, s in enumerate(subs):
        t = load(s)
        for n in t:  # one ulp up or down in a random half of the elements
            bits = b[n].view(torch.int16)
            g = torch.Generator().manual_seed(10 + i)
            flip = torch.randint(-1, 2, bits.shape, generator=g, dtype=torch.int16)
            t[n] = (bits + flip).view(torch.bfloat16)
        (s / "model.safetensors").unlink()
        save_file(t, str(s / "model.safetensors"))
    merge("ties", subs, tmp_path / "a", base=base, density=0.3, chunk_elements=50)
    merge("ties", subs, tmp_path / "b", base=base, density=0.3, chunk_elements=100_000)
    a, bb = load(tmp_path / "a"), load(tmp_path / "b")
    b, tau = taus(base, subs)
    want = reference_ties(b, tau, 0.3, 1.0, [1.0] * 3, True)
    for n in a:
        assert torch.equal(a[n].view(torch.int16), bb[n].view(torch.int16)), n
        assert close_in_bf16(a[n], want[n]), n


def test_radix_selection_is_exact_through_every_digit():
    """A tiny `limit` forces every radix pass (no early collection), on heavy ties."""
    g = torch.Generator().manual_seed(0)
    tau = (torch.randint(-3, 4, (3, 5000), generator=g).float() * 2.0 ** -10)
    mags = topk.magnitude_bits(tau)

    def chunks():
        for lo in range(0, 5000, 700):
            yield lo, mags[:, lo:lo + 700]
    salts = [11, 22, 33]
    ks = [1, 1234, 4999]
    got = topk.kth_largest(chunks, 5000, ks, salts, limit=2)
    for i, k in enumerate(ks):
        keys = (mags[i] << 32) | topk.perm32(torch.arange(5000), salts[i])
        assert got[i] == int(keys.sort(descending=True).values[k - 1])
        assert int((keys >= got[i]).sum()) == k
        assert torch.equal(topk.keep_mask(mags[i], 0, salts[i], got[i]), keys >= got[i])
    assert topk.kth_largest(chunks, 5000, [0, 5000], salts[:2]) == [topk.KEEP_NONE, topk.KEEP_ALL]


def test_perm32_is_a_bijection():
    x = torch.arange(1 << 16)
    for hi in (0, 1 << 20, (1 << 32) - (1 << 16)):
        y = topk.perm32(x + hi, 12345)
        assert y.unique().numel() == x.numel() and int(y.max()) < 1 << 32 and int(y.min()) >= 0


def chunk_of(tau, base, method, settings, state=None, start=0, weights=None):
    k, n = tau.shape
    m = METHODS[method]
    return Chunk(subs=base + tau, base=base,
                 name="t", start=start, n=n, dtype=torch.float32, out_dtype=torch.float32,
                 weights=weights or [1.0] * k, settings=m.resolve(settings),
                 sampler=rng.Sampler([1.0 / k] * k), state=state, method=method)


def test_dare_drops_with_probability_p_and_rescales_by_one_over_one_minus_p():
    k, n, p = 4, 200_000, 0.7
    g = torch.Generator().manual_seed(2)
    tau = torch.randn(k, n, generator=g)
    base = torch.zeros(n)
    got, kept = dare.dropped(chunk_of(tau, base, "dare_linear", {"drop": p, "seed": 3}))
    frac = kept / (k * n)
    assert abs(frac - (1 - p)) < 4 * (p * (1 - p) / (k * n)) ** 0.5
    nz = got != 0
    # tau / (1 - p): the kernel's float32 operations against one division, a few roundings
    # (was: rtol 1e-6, as now: gamma(16))
    assert torch.allclose(got[nz], tau[nz] / (1 - p), rtol=gamma(16), atol=0)
    # masks differ across sub-models and seeds, and depend only on the element index
    assert not torch.equal(nz[0], nz[1])
    again, _ = dare.dropped(chunk_of(tau[:, 1000:], base[1000:], "dare_linear",
                                     {"drop": p, "seed": 3}, start=1000))
    assert torch.equal(again, got[:, 1000:])
    other, _ = dare.dropped(chunk_of(tau, base, "dare_linear", {"drop": p, "seed": 4}))
    assert not torch.equal(other != 0, nz)


def test_dare_l1_rescale_restores_each_tensors_l1_norm(tmp_path):
    base, subs = make(tmp_path, dtype=torch.float32)
    b, tau = taus(base, subs)
    for i in range(3):
        r = merge("dare_linear", [subs[i]], tmp_path / f"o{i}", base=base, drop=0.6, rescale="l1",
                  seed=5, chunk_elements=64)
        assert r["method_id"] == "dare-linear-p0.6-rl1-l1.0-s5"
        got = load(tmp_path / f"o{i}")
        for n in b:
            delta = got[n].double() - b[n].double()
            # the rescale factor is a ratio of two float32 sums over the tensor's elements (any
            # order: gamma(numel) each), the merged values one rounding each (was: rel 1e-5)
            rel = 2 * gamma(b[n].numel()) + gamma(4)
            assert float(delta.abs().sum()) == pytest.approx(float(tau[i][n].abs().sum()), rel=rel), n


def test_dare_ties_and_linear_against_references_with_the_same_masks(tmp_path):
    base, subs = make(tmp_path)
    b, tau = taus(base, subs)
    p, seed = 0.4, 8
    for method in ("dare_linear", "dare_ties"):
        merge(method, subs, tmp_path / method, base=base, drop=p, seed=seed, weights=[1.0, 0.5, 2.0])
        got = load(tmp_path / method)
        for n in b:
            idx = torch.arange(b[n].numel())
            kept = [t[n] * (rng.draws(seed, n, f"dare{i}", idx) >= np.ceil(p * 2**53)).reshape(b[n].shape)
                    / (1 - p) for i, t in enumerate(tau)]
            weighted = torch.stack([w * t for w, t in zip([1.0, 0.5, 2.0], kept)])
            if method == "dare_linear":
                mixed = weighted.sum(0)
            else:  # mergekit's dare_ties: elected sign, agreeing sum, not normalised
                sign = torch.where(weighted.sum(0) >= 0, 1.0, -1.0).double()
                mixed = (weighted * (weighted.sign() == sign)).sum(0)
            assert close_in_bf16(got[n], b[n].double() + mixed), (method, n)


def test_selection_variants_take_one_surviving_task_vector_per_element(tmp_path):
    base, subs = make(tmp_path)
    b, tau = taus(base, subs)
    merge("ties_select", subs, tmp_path / "ts", base=base, density=0.4, seed=1)
    merge("dare_resample", subs, tmp_path / "dr", base=base, drop=0.5, rounds=2, seed=1)
    ts, dr = load(tmp_path / "ts"), load(tmp_path / "dr")
    for n in b:
        trimmed = torch.stack([t[n] * reference_keep(t[n], 0.4, n, i) for i, t in enumerate(tau)])
        sign = torch.where(trimmed.sum(0) >= 0, 1.0, -1.0).double()
        agree = (trimmed.sign() == sign)
        cands = torch.where(agree, b[n].double() + trimmed, torch.nan).to(torch.bfloat16)
        got = ts[n]
        none = ~agree.any(0)
        assert torch.equal(got[none], b[n][none])  # the base where nothing agrees
        assert bool((cands == got).any(0)[~none].all())  # else one agreeing entry
        picked = (cands == got).float().argmax(0)[~none]
        assert picked.unique().numel() == 3  # all sub-models get picked
        # dare_resample: each element is the base or base + tau_i / (1 - p) of some i
        opts = torch.stack([(b[n].double() + t[n] / 0.5).to(torch.bfloat16) for t in tau])
        assert bool(((opts == dr[n]).any(0) | (dr[n] == b[n])).all())


@pytest.mark.parametrize("mid", ["ties-d0.3-l0.8", "ties-select-d0.3-l1.0-s2",
                                 "dare-ties-p0.3-rl1-l1.0-s1", "dare-resample-p0.5-n2-l1.0-s4",
                                 "task-arithmetic-l0.5"])
def test_bytes_do_not_depend_on_chunking_or_threads(tmp_path, mid):
    base, subs = make(tmp_path)
    name, settings = parse_method_id(mid)
    outs = []
    for i, (chunk, threads) in enumerate([(37, 1), (1000, 2), (None, 1)]):
        torch.set_num_threads(threads)
        merge(name, subs, tmp_path / f"o{i}", base=base, chunk_elements=chunk, **settings)
        outs.append((tmp_path / f"o{i}" / "model.safetensors").read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_registry_ids_round_trip_and_refuse_bad_settings():
    for m in METHODS.values():
        assert parse_method_id(m.method_id()) == (m.name, m.resolve({}))
    assert method_id("ties", density=0.25, normalize=False) == "ties-d0.25-l1.0-n0"
    assert parse_method_id("dare-linear-p0.9-rl1-l0.5-s3") == (
        "dare_linear", {"drop": 0.9, "rescale": "l1", "lambda": 0.5, "seed": 3})
    with pytest.raises(ValueError, match="has no setting 'seed'"):
        method_id("ties", seed=1)
    with pytest.raises(ValueError, match="setting 'rescale'"):
        method_id("dare_linear", rescale="l2")
    with pytest.raises(ValueError, match="not a merge method id"):
        parse_method_id("ties-d0.2")


def test_task_vector_methods_need_the_base(tmp_path):
    _, subs = make(tmp_path)
    with pytest.raises(MergeError, match="ties needs --base"):
        merge("ties", subs, tmp_path / "o")
    with pytest.raises(MergeError, match="has no setting 'rounds'"):
        merge("ties", subs, tmp_path / "o", base=tmp_path / "base", rounds=2)
    assert not (tmp_path / "o").exists()


def _tiny_llama(path, seed, base=None, step=0.02):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, vocab_size=64,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    if base is not None:
        sd = {n: base[n] + step * torch.randn(base[n].shape) for n in base}
        model.load_state_dict(sd)
    model.save_pretrained(path)
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def tiny_llama_runs(tmp_path, k: int):
    """A float32 tiny-Llama base (tmp_path/base) and k runs moved from it; (base state, runs)."""
    base_sd = _tiny_llama(tmp_path / "base", 0)
    subs = []
    for i in range(k):
        _tiny_llama(tmp_path / f"s{i}", 1 + i, base=base_sd)
        subs.append(tmp_path / f"s{i}")
    return base_sd, subs


def mergekit_merge(spec: dict, out) -> dict:
    """mergekit's merge of the config `spec` (float32) into `out`: its tensors by name."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    run_merge(MergeConfiguration.model_validate({"dtype": "float32", **spec}), str(out),
              options=MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False))
    tensors = {}
    for f in Path(out).glob("*.safetensors"):
        tensors.update(load_file(str(f)))
    return tensors


@pytest.mark.parametrize("ours,theirs,params", [
    ("task_arithmetic", "task_arithmetic", {"lambda": 0.6}),
    ("ties", "ties", {"density": 0.3, "lambda": 1.0}),
])
def test_against_mergekit_on_float32_checkpoints(tmp_path, ours, theirs, params):
    pytest.importorskip("mergekit")
    _, subs = tiny_llama_runs(tmp_path, 3)
    w = [1.0, 0.5, 0.8]
    mk_params = {"weight": None, **({"density": params["density"]} if "density" in params else {})}
    theirs_t = mergekit_merge({
        "merge_method": theirs, "base_model": str(tmp_path / "base"),
        "parameters": {"lambda": params["lambda"]},
        "models": [{"model": str(s), "parameters": {**mk_params, "weight": wi}} for s, wi in zip(subs, w)]},
        tmp_path / "mk")
    merge(ours, subs, tmp_path / "om", base=tmp_path / "base", weights=w, **params)
    ours_t = load(tmp_path / "om")
    base_t = load(tmp_path / "base")
    runs = [load(s) for s in subs]
    assert set(ours_t) == set(theirs_t)
    # both compute base + lambda sum_i w_i tau_i (TIES: over the runs that agree with the
    # elected sign, divided by their weights) in float32 in their own order: each side is
    # within gamma(2k + 3) of exact, relative to the magnitudes it combines (was: atol 1e-6,
    # rtol 1e-5)
    tol = 2 * gamma(2 * len(subs) + 3)
    for n in ours_t:
        scale = base_t[n].abs() + params["lambda"] * sum(
            wi * ((r[n] - base_t[n]).abs() + r[n].abs() + base_t[n].abs()) for wi, r in zip(w, runs))
        assert bool(((ours_t[n] - theirs_t[n]).abs() <= tol * scale).all()), n


@pytest.mark.skipif(not __import__("ordermerge.merge.fused_tv", fromlist=["x"]).available(torch.bfloat16, None),
                    reason="numba not installed")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("method,settings", [
    ("task_arithmetic", {"lambda": 0.7}), ("ties", {"density": 0.3, "lambda": 1.0}),
    ("ties", {"density": 0.3, "lambda": 0.5, "normalize": False}),
    ("dare_linear", {"drop": 0.4, "lambda": 1.0, "seed": 3}),
    ("dare_ties", {"drop": 0.4, "lambda": 0.9, "seed": 3, "normalize": True}),
    ("dare_ties", {"drop": 0.4, "lambda": 1.0, "seed": 3, "rescale": "l1"})])
def test_fused_kernels_give_the_bytes_of_the_torch_arithmetic(dtype, method, settings):
    """Signed zeros, NaN, inf and exact ties included; weights that are not exact in float32."""
    from ordermerge.merge import fused_tv, task_arithmetic
    k, n = 3, 3 * 2048 + 77
    g = torch.Generator().manual_seed(4)
    base = torch.randn(n, generator=g).to(dtype)
    subs = [torch.where(torch.rand(n, generator=g) < 0.7, base.float() + 0.01 * torch.randn(n, generator=g),
                        base.float()).to(dtype) for _ in range(k)]
    edge = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1.0, -1.0, 1e-30])
    for i, s in enumerate(subs):
        s[:8] = edge.roll(i).to(dtype)
    base[:8] = torch.tensor([-0.0, 0.0, 1.0, 2.0, 0.5, 1.0, -1.0, 0.0]).to(dtype)
    module = {"task_arithmetic": task_arithmetic, "ties": ties}.get(method, dare)
    weights = [0.3, 1.1, 0.7]
    chunk, chunks = chunk_views(subs, base, method, settings, weights)
    info = SimpleNamespace(numel=n, torch_dtype=dtype)  # the tensor, as the engine passes it
    state = module.prepare(chunks, info, "w", plan_of(method, settings, k)) \
        if hasattr(module, "prepare") else None
    bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
    for lo, hi in ((0, n), (1000, 5000)):
        want, wc = module.run(chunk(lo, hi, state))
        got, gc = module.run_fused(chunk(lo, hi, state))
        assert torch.equal(got.view(bits), want.view(bits)), (lo, hi)
        # the kernel's own count of what it wrote as NaN or Inf (the edge rows hold some)
        assert gc.pop("nonfinite") == int((~torch.isfinite(want)).sum()) > (0 if lo == 0 else -1)
        assert gc == wc
    assert fused_tv.available(dtype, None) and not fused_tv.available(torch.float16, None)


def chunk_views(subs, base, method, settings, weights, size=1000):
    """chunk(lo, hi, state): the engine's Chunk of elements lo..hi-1 of the flat tensors
    `subs` and `base` (addresses set, NaN/Inf check on); chunks(): the raw reader that
    prepare() passes over the tensor in chunks of `size` (chunk_readers')."""
    resolved = METHODS[method].resolve(settings)

    def chunk(lo, hi, state):
        c = Chunk(subs=[s[lo:hi] for s in subs], base=base[lo:hi], name="w", start=lo, n=hi - lo,
                  dtype=base.dtype, out_dtype=base.dtype, weights=weights, settings=resolved,
                  state=state, method=method)
        c.addrs = [s[lo:hi].data_ptr() for s in subs]
        c.base_addr = base[lo:hi].data_ptr()
        c.check = True
        return c

    return chunk, chunk_readers(subs, base, size)[0]


def plan_of(method, settings, k):
    """What prepare() reads of the engine's plan."""
    return SimpleNamespace(dev=torch.device("cpu"), settings=METHODS[method].resolve(settings),
                           subs=[None] * k)


@pytest.mark.skipif(not __import__("ordermerge.merge.fused_tv", fromlist=["x"]).available(torch.bfloat16, None),
                    reason="numba not installed")
def test_ties_where_the_kth_largest_magnitude_is_zero_keeps_every_nonzero_entry():
    """bf16 sub-models that moved 8% of their elements (the rest: tau = 0, signed zeros
    among them), at density 0.5: the k-th largest |tau| is a 0. The band pass answers
    topk.NONZERO without collecting the zeros' keys (the exact answer, a zero's key ranked
    by its hash, took topk's radix passes over the tensor: 11 s of a SmolLM2 TIES merge),
    and TIES and TIES-select write the bytes they write with the exact thresholds, fused and
    in torch; only `kept` drops, to the nonzero entries."""
    from ordermerge.merge import fused_tv
    k, n = 3, 200_003
    g = torch.Generator().manual_seed(21)
    base = torch.randn(n, generator=g).to(torch.bfloat16)
    subs = [torch.where(torch.rand(n, generator=g) < 0.08, base.float() + 0.05 * torch.randn(n, generator=g),
                        base.float()).to(torch.bfloat16) for _ in range(k)]
    base[:4] = 0.0
    subs[0][:2] = -0.0  # tau = -0 - (+0) = -0
    weights = [0.3, 1.1, 0.7]
    raw, mags = chunk_readers(subs, base, 70_001)
    salts = ties._salts("w", k)
    ks = [n // 2] * k
    exact = topk.kth_largest(mags, n, ks, salts)
    assert all(t >> 32 == 0 for t in exact)  # the k-th largest |tau| is a 0 in every row
    nonzero = [int((s.float() - base.float() != 0).sum()) for s in subs]
    assert max(nonzero) < n // 2
    assert fused_tv.band_kth_largest(raw, n, ks, salts, torch.bfloat16) == [topk.NONZERO] * k
    settings = {"density": 0.5, "lambda": 0.9}
    assert ties.prepare(raw, SimpleNamespace(numel=n, torch_dtype=torch.bfloat16), "w",
                        plan_of("ties", settings, k)) == [topk.NONZERO] * k
    for method in ("ties", "ties_select"):
        chunk, _ = chunk_views(subs, base, method, {**settings, **({"seed": 4} if method == "ties_select" else {})},
                            weights)
        want, wc = ties.run(chunk(0, n, exact))
        got, gc = ties.run(chunk(0, n, [topk.NONZERO] * k))
        assert torch.equal(got.view(torch.int16), want.view(torch.int16)), method
        assert wc["kept"] == sum(ks) and gc["kept"] == sum(nonzero)
        if method == "ties":
            fused, fc = ties.run_fused(chunk(0, n, [topk.NONZERO] * k))
            assert torch.equal(fused.view(torch.int16), want.view(torch.int16))
            assert fc["kept"] == sum(nonzero)
    # where most entries moved, the k-th largest |tau| is not 0: the band gives the exact key
    moved = [torch.where(torch.rand(n, generator=g) < 0.9, base.float() + 0.05 * torch.randn(n, generator=g),
                         base.float()).to(torch.bfloat16) for _ in range(k)]
    raw, mags = chunk_readers(moved, base, 70_001)
    assert fused_tv.band_kth_largest(raw, n, ks, salts, torch.bfloat16) == \
        topk.kth_largest(mags, n, ks, salts)


def chunk_readers(subs, base, size):
    """The engine's two views of one tensor in chunks of `size`: raw (start, K views, the
    base's view) for the numba searches, and (start, [K, n] |tau| bits) for topk's."""
    def raw():
        for lo in range(0, base.numel(), size):
            yield lo, [s[lo:lo + size] for s in subs], base[lo:lo + size]

    def mags():
        for lo, ss, b in raw():
            yield lo, topk.magnitude_bits(torch.stack(ss).float() - b.float())
    return raw, mags


@pytest.mark.skipif(not __import__("ordermerge.merge.fused_tv", fromlist=["x"]).available(torch.bfloat16, None),
                    reason="numba not installed")
def test_fused_threshold_search_equals_the_radix_passes():
    from ordermerge.merge import fused_tv
    g = torch.Generator().manual_seed(9)
    n = 20_000
    base = torch.randn(n, generator=g).to(torch.bfloat16)
    subs = [(base.view(torch.int16) + torch.randint(-2, 3, (n,), generator=g, dtype=torch.int16)).view(torch.bfloat16)
            for _ in range(3)]

    raw, mags = chunk_readers(subs, base, 3000)
    ks, salts = [1, 6000, 19_999], [5, 6, 7]
    want = topk.kth_largest(mags, n, ks, salts)
    assert fused_tv.kth_largest(raw, n, ks, salts, torch.bfloat16) == topk.nonzero_floor(want)
    assert fused_tv.histogram_kth_largest(raw, n, ks, salts, torch.bfloat16) == want
    assert fused_tv.histogram_kth_largest(raw, n, ks, salts, torch.bfloat16, limit=10) is None


@pytest.mark.skipif(not __import__("ordermerge.merge.fused_tv", fromlist=["x"]).available(torch.bfloat16, None),
                    reason="numba not installed")
@pytest.mark.parametrize("n", [300, 200_003])
def test_the_one_pass_band_search_finds_the_exhaustive_threshold_or_declines(n, monkeypatch):
    """The sampled band holds the k-th largest key for continuous magnitudes (every k,
    including the ends), and the answer is the exhaustive one; a band that misses (a
    sample made to mislead) or overflows returns None, never a wrong threshold."""
    from ordermerge.merge import fused_tv
    g = torch.Generator().manual_seed(n)
    base = torch.randn(n, generator=g).to(torch.bfloat16)
    subs = [(base.float() + torch.randn(n, generator=g) * 0.01 * (i + 1)).to(torch.bfloat16)
            for i in range(3)]

    raw, mags = chunk_readers(subs, base, 70_001)
    salts = [11, 12, 13]
    for ks in ([1, n // 5, n - 1], [n // 2, 2, n // 100 + 1], [0, n, n // 5]):
        want = topk.kth_largest(mags, n, ks, salts)
        assert fused_tv.band_kth_largest(raw, n, ks, salts, torch.bfloat16) == topk.nonzero_floor(want), ks
    # a sample that lies: every sampled magnitude 0, so the band sits at the bottom
    monkeypatch.setattr(fused_tv, "_sample_mags", lambda chunks, numel, k, like: np.zeros((k, 512), dtype=np.int32))
    assert fused_tv.band_kth_largest(raw, n, [n // 5] * 3, salts, torch.bfloat16) is None
    assert fused_tv.kth_largest(raw, n, [n // 5] * 3, salts, torch.bfloat16) == topk.kth_largest(mags, n, [n // 5] * 3, salts)


@pytest.mark.skipif(not __import__("ordermerge.merge.fused_tv", fromlist=["x"]).available(torch.bfloat16, None),
                    reason="numba not installed")
def test_the_band_limits_and_the_selection_are_the_sorted_rows():
    """fused_tv._sample_band (the sample's values at two descending positions, by a
    histogram of the bits and one bin partitioned) and fused_tv._select (the r-th smallest
    key of a row spread over segments, likewise) against a sort, on rows with many ties and
    on rows of distinct values; positions at both ends and outside the sample."""
    from ordermerge.merge import fused_tv
    g = np.random.default_rng(0)
    size = 5000
    tied = g.integers(0, 40, size=(2, size)) << 20 | g.integers(0, 3, size=(2, size))
    spread = g.integers(0, 2**31 - 1, size=(2, size))
    sample = np.concatenate([tied, spread]).astype(np.int32)
    k = sample.shape[0]
    for tops, bottoms in (([0, 5, 100, -1], [size - 1, 50, 4000, size]),
                          ([1, 2, 3, 4], [10, 20, 30, 40])):
        tops, bottoms = np.asarray(tops, dtype=np.int64), np.asarray(bottoms, dtype=np.int64)
        his = np.zeros(k, dtype=np.int64)
        los = np.zeros(k, dtype=np.int64)
        inside = np.zeros(k, dtype=np.int64)
        fused_tv._sample_band(sample, tops, bottoms, his, los, inside)
        for i in range(k):
            desc = np.sort(sample[i])[::-1]
            hi = int(desc[tops[i]]) if tops[i] >= 0 else np.iinfo(np.int64).max
            lo = int(desc[bottoms[i]]) if bottoms[i] < size else 0
            assert (his[i], los[i]) == (hi, lo), i
            assert inside[i] == int(((sample[i] >= max(lo, 1)) & (sample[i] <= hi)).sum())
    # the selection: keys (|tau| bits above, a hash below) in two segments per row
    parts = 2
    keys_rows = [(g.integers(100, 140, size=3000).astype(np.int64) << 32)
                 | g.choice(2**32, size=3000, replace=False).astype(np.int64) for _ in range(3)]
    filled = np.array([[1000, 1500, 2000], [2000, 1500, 1000]], dtype=np.int64)
    caps = filled.max(axis=0)
    offsets = (np.arange(parts)[:, None] * caps.sum()
               + np.concatenate([[0], np.cumsum(caps)[:-1]])[None, :]).astype(np.int64)
    keys = np.zeros(parts * int(caps.sum()), dtype=np.int64)
    for i, row in enumerate(keys_rows):
        keys[offsets[0, i]:offsets[0, i] + filled[0, i]] = row[:filled[0, i]]
        keys[offsets[1, i]:offsets[1, i] + filled[1, i]] = row[filled[0, i]:]
    ranks = np.array([0, 1234, 2999], dtype=np.int64)
    los_k = np.full(3, 100, dtype=np.int64)
    his_k = np.full(3, 139, dtype=np.int64)
    found = np.zeros(3, dtype=np.int64)
    fused_tv._select(keys, offsets, filled, ranks, los_k, his_k, found)
    assert list(found) == [int(np.sort(r)[q]) for r, q in zip(keys_rows, ranks)]
