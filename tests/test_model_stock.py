"""Model Stock (ordermerge/merge/model_stock.py): against mergekit 0.1.5's model_stock, against
a float64 reference of the formula, at its limits (orthogonal, parallel and opposite task
vectors), and the same bytes whatever the chunking."""
import pytest
import torch

from ordermerge.merge.engine import merge
from ordermerge.merge.methods import METHODS, method_id, parse_method_id
from ordermerge.merge.model_stock import interpolation_ratio
from test_taskvec import load, make, mergekit_merge, tiny_llama_runs
from ulps import gamma


def reference(base: dict, subs: list[dict]) -> dict:
    """The formula in float64 on whole tensors."""
    out = {}
    k = len(subs)
    for n, b in base.items():
        b64 = b.double().reshape(-1)
        taus = [s[n].double().reshape(-1) - b64 for s in subs]
        cos = [float(taus[i] @ taus[j] / max(float(taus[i].norm() * taus[j].norm()), 1e-6))
               for i in range(k) for j in range(i + 1, k)]
        c = sum(cos) / len(cos)
        t = k * c / (1 + (k - 1) * c)
        avg = sum(s[n].double().reshape(-1) for s in subs) / k
        out[n] = (t * avg + (1 - t) * b64).reshape(b.shape)
    return out


def test_the_id_and_the_entry():
    assert method_id("model_stock") == "model-stock"
    assert parse_method_id("model-stock") == ("model_stock", {})
    m = METHODS["model_stock"]
    assert m.needs_base and m.min_models == 2 and not m.random and m.label == "Model Stock"


def test_the_ratio_at_its_limits():
    # orthogonal task vectors: cos 0, t 0 (the base); parallel: cos 1, t 1 (the average)
    assert interpolation_ratio(torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))) == 0.0
    assert interpolation_ratio(torch.full((3, 3), 2.0, dtype=torch.float64)) == 1.0
    # two opposite task vectors: 1 + (K-1) cos = 0, no finite t: the base, as mergekit
    assert interpolation_ratio(torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)) == 0.0
    # K = 3 at cos 0.5: t = 1.5 / 2 = 0.75
    g = torch.tensor([[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0]], dtype=torch.float64)
    assert interpolation_ratio(g) == 0.75
    # zero task vectors (a run that did not move): norms clamped, cos 0
    assert interpolation_ratio(torch.zeros(2, 2, dtype=torch.float64)) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_merge_is_the_formula_and_the_same_bytes_at_any_chunking(tmp_path, dtype):
    base, subs = make(tmp_path, k=4, dtype=dtype, step=0.02, moved=0.6)
    merge("model_stock", subs, tmp_path / "a", base=tmp_path / "base")
    merge("model_stock", subs, tmp_path / "b", base=tmp_path / "base", chunk_elements=97)
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    for n in a:
        assert torch.equal(a[n].view(torch.int16) if dtype == torch.bfloat16 else a[n],
                           b[n].view(torch.int16) if dtype == torch.bfloat16 else b[n]), n
    b0, loaded = load(tmp_path / "base"), [load(s) for s in subs]
    want = reference(b0, loaded)
    f32 = torch.finfo(torch.float32).eps
    for n, w in want.items():
        got = a[n].double()
        # float32 arithmetic (a few roundings of values the size of the inputs), then one
        # rounding to the dtype
        scale = b0[n].double().abs() + sum(s[n].double().abs() for s in loaded) / len(loaded)
        tol = torch.finfo(dtype).eps / 2 * w.abs() + 8 * f32 * scale
        assert ((got - w).abs() <= tol).all(), (n, float(((got - w).abs() / scale).max()))
        # and it is neither the base nor the average: t strictly inside (0, 1) here
        assert not torch.equal(a[n], load(tmp_path / "base")[n])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_fused_kernels_give_the_torch_paths_bytes_at_any_thread_count(tmp_path, dtype, monkeypatch):
    """The numba Gram (per-block BLAS products added in block order) and the mix in the
    average's kernel, against the torch path (one float64 product per 64k block, the mix in
    torch): t, rounded to float32, and every output byte the same here; and the same
    bytes with one thread or two."""
    from ordermerge.merge import fused, fused_tv
    base, subs = make(tmp_path, k=4, dtype=dtype, step=0.02, moved=0.6)
    threads = fused.numba.get_num_threads() if fused.numba else 1
    outs = []
    try:
        for i, n in enumerate([1, 2]):
            fused.set_threads(n)
            r = merge("model_stock", subs, tmp_path / f"f{i}", base=tmp_path / "base", chunk_elements=3000)
            assert r["fused_tensors"] > 0
            outs.append(load(tmp_path / f"f{i}"))
    finally:
        fused.set_threads(threads)
    monkeypatch.setattr(fused, "numba", None)
    monkeypatch.setattr(fused_tv, "numba", None)
    r = merge("model_stock", subs, tmp_path / "torch", base=tmp_path / "base")
    assert r["fused_tensors"] == 0
    outs.append(load(tmp_path / "torch"))
    bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
    for n in outs[0]:
        assert all(torch.equal(o[n].view(bits), outs[0][n].view(bits)) for o in outs[1:]), n


def test_against_mergekit_on_float32_checkpoints(tmp_path):
    """Equal within float32 rounding: t's float64 accumulation (ours) against mergekit's
    float32 reductions. mergekit's mean cosine c is off by at most 3 gamma(N) for a tensor of
    N elements (a dot product and two norms, each a float32 sum in some order); t = k c / (1 +
    (k - 1) c) moves by dt/dc = k / (1 + (k - 1) c)^2 times that, which moves the output by dt
    |avg - base|; both sides then mix in float32, within gamma(k + 3) of the magnitudes each.
    (Was: within 4 float32 ulps of the tensor's largest base element, read off one machine.)"""
    pytest.importorskip("mergekit")
    base_sd, subs = tiny_llama_runs(tmp_path, 4)
    theirs = mergekit_merge({"merge_method": "model_stock", "base_model": str(tmp_path / "base"),
                             "models": [{"model": str(s)} for s in subs]}, tmp_path / "mk")
    merge("model_stock", subs, tmp_path / "om", base=tmp_path / "base")
    ours = load(tmp_path / "om")
    runs = [load(s) for s in subs]
    assert set(ours) == set(theirs)
    k, worst = len(subs), 0.0
    for n in ours:
        assert not torch.equal(ours[n], base_sd[n])
        b = base_sd[n].double().reshape(-1)
        rs = [r[n].double().reshape(-1) for r in runs]
        taus = [r - b for r in rs]
        c = sum(float(taus[i] @ taus[j] / (taus[i].norm() * taus[j].norm()))
                for i in range(k) for j in range(i + 1, k)) / (k * (k - 1) / 2)
        avg = sum(rs) / k
        tol = (k / (1 + (k - 1) * c) ** 2 * 3 * gamma(b.numel()) * (avg - b).abs()
               + 2 * gamma(k + 3) * (avg.abs() + b.abs()))
        diff = (ours[n].double().reshape(-1) - theirs[n].double().reshape(-1)).abs()
        assert bool((diff <= tol).all()), (n, float((diff / tol).max()))
        worst = max(worst, float((diff / tol).max()))
    print(f"Model Stock against mergekit: at most {worst:.2f} of the tolerance")


def test_it_needs_the_base_and_two_runs(tmp_path):
    from ordermerge.merge.engine import MergeError
    _, subs = make(tmp_path, k=2)
    with pytest.raises(MergeError, match="model_stock needs --base"):
        merge("model_stock", subs, tmp_path / "o")
    with pytest.raises(MergeError, match="model_stock.*at least 2"):
        merge("model_stock", subs[:1], tmp_path / "o", base=tmp_path / "base")

