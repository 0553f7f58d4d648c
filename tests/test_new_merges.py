"""SCE, the Karcher mean, Multi-SLERP, Breadcrumbs and DELLA (merge/sce.py, sphere.py,
sparse.py): against mergekit 0.1.5's methods on small checkpoints (equal within float
rounding for the deterministic ones; DELLA's drop in distribution against mergekit's own
della_magprune), the same bytes at any chunking, and their settings and refusals."""
import pytest
import torch

from ordermerge.merge.engine import MergeError, merge
from ordermerge.merge.methods import METHODS, method_id, parse_method_id
from ordermerge.merge.sphere import karcher_coefficients, multislerp_coefficients
from test_taskvec import load, make, mergekit_merge, tiny_llama_runs
from ulps import gamma, unit_roundoff

U32 = unit_roundoff(torch.float32)


def test_the_ids_settings_and_refusals():
    assert method_id("sce") == "sce-t0.1" and parse_method_id("sce-t0.5") == ("sce", {"select_topk": 0.5})
    assert method_id("karcher") == "karcher" and method_id("karcher", max_iter=3) == "karcher-i3"
    assert method_id("multislerp") == "multislerp"
    assert method_id("breadcrumbs") == "breadcrumbs-d0.9-g0.01-l1.0"
    assert parse_method_id("breadcrumbs-ties-d0.8-g0.05-l1.0-n1")[1]["normalize"] is True
    assert method_id("della", seed=2) == "della-d0.2-e0.1-l1.0-s2"
    assert method_id("della_linear", rescale="l1", seed=0) == "della-linear-d0.2-e0.1-rl1-l1.0-s0"
    assert METHODS["della"].random and not METHODS["sce"].random and not METHODS["karcher"].needs_base
    with pytest.raises(ValueError, match="'della': density 0.2 and epsilon 0.3: density - epsilon must be > 0"):
        method_id("della", epsilon=0.3, seed=0)
    with pytest.raises(ValueError, match="setting 'select_topk': 1.5 is outside"):
        method_id("sce", select_topk=1.5)


def test_sce_takes_no_weights(tmp_path):
    base, subs = make(tmp_path, k=2, dtype=torch.float32)
    with pytest.raises(MergeError, match="this method weighs the runs itself"):
        merge("sce", subs, tmp_path / "o", base=base, weights=[0.5, 0.5])
    assert not (tmp_path / "o").exists()


def _mk(method, subs, base=None, per_model=None, shared=None, weights=None, dtype="float32"):
    spec = {"merge_method": method, "dtype": dtype, "out_dtype": dtype,
            "models": [{"model": str(s), "parameters": {**(per_model or {}),
                                                        **({"weight": weights[i]} if weights else {})}}
                       for i, s in enumerate(subs)]}
    if base is not None:
        spec["base_model"] = str(base)
    if shared:
        spec["parameters"] = shared
    return spec


def test_the_sphere_means_are_mergekits_in_float64_within_one_float32_combination(tmp_path):
    """Karcher (raw weights, uniform) and Multi-SLERP (task vectors, weights): mergekit run in
    float64 is the reference of the formula; ours is sum_i a_i x_i with a_i rounded to
    float32 (u each), K float32 products added in order (gamma(K + 2) of the magnitudes, +
    one for Multi-SLERP's tau and one for its base), then one rounding to float32 (u)."""
    pytest.importorskip("mergekit")
    _, subs = tiny_llama_runs(tmp_path, 3)
    base = tmp_path / "base"
    b, runs = load(base), [load(s) for s in subs]
    w = [0.5, 0.3, 0.2]
    ref = mergekit_merge(_mk("karcher", subs, dtype="float64"), tmp_path / "mk-karcher")
    merge("karcher", subs, tmp_path / "karcher")
    got = load(tmp_path / "karcher")
    for n in got:
        scale = sum(r[n].double().abs() for r in runs) / len(runs) * 1.01  # |a_i| <= 1.01 / K here
        tol = gamma(len(runs) + 2) * scale + U32 * ref[n].abs()
        assert ((got[n].double() - ref[n]).abs() <= tol).all(), n
    ref = mergekit_merge(_mk("multislerp", subs, base, weights=w, dtype="float64"), tmp_path / "mk-slerp")
    merge("multislerp", subs, tmp_path / "slerp", base=base, weights=w)
    got = load(tmp_path / "slerp")
    for n in got:
        bn = b[n].double().abs()
        scale = bn + sum(wi * 1.01 * ((r[n].double() - b[n].double()).abs() + r[n].double().abs() + bn)
                         for wi, r in zip(w, runs))
        tol = gamma(len(runs) + 4) * scale + U32 * ref[n].abs()
        assert ((got[n].double() - ref[n]).abs() <= tol).all(), n
        assert not torch.equal(got[n], b[n])


def test_the_sphere_coefficients_at_their_limits():
    # parallel vectors: the Karcher mean of x and 2x is 1.5 x (direction x, mean norm 1.5)
    g = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)
    a = karcher_coefficients(g, [0.5, 0.5])
    assert a[0] + 2 * a[1] == pytest.approx(1.5, rel=1e-12)
    # two orthogonal unit vectors: the mean is their bisector at norm 1: (x + y) / sqrt(2)
    a = karcher_coefficients(torch.eye(2, dtype=torch.float64), [0.5, 0.5])
    assert a == pytest.approx([2 ** -0.5, 2 ** -0.5], rel=1e-12)
    # Multi-SLERP of orthogonal task vectors of norms 1 and 3, weights 1/2: the unit mean's
    # direction (bisector), at the mean norm 2
    g = torch.diag(torch.tensor([1.0, 9.0], dtype=torch.float64))
    a = multislerp_coefficients(g, [1.0, 1.0], "w")
    assert a[0] == pytest.approx(2 * 2 ** -0.5, rel=1e-6) and 3 * a[1] == pytest.approx(2 * 2 ** -0.5, rel=1e-6)
    # antipodal task vectors: K = 2 falls back to the linear mix (mergekit's rule); K = 3 refused
    g = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    assert multislerp_coefficients(g, [1.0, 1.0], "w") == [0.5, 0.5]
    g3 = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    with pytest.raises(MergeError, match="multislerp: tensor 'w': the weighted sum of the unit task vectors is zero"):
        multislerp_coefficients(g3, [1.0, 1.0, 0.0], "w")


@pytest.mark.parametrize("ours,theirs,settings,shared,per_model,weights", [
    ("sce", "sce", {"select_topk": 0.3}, {"select_topk": 0.3}, {}, None),
    ("sce", "sce", {"select_topk": 1.0}, {"select_topk": 1.0}, {}, None),
    ("breadcrumbs", "breadcrumbs", {"density": 0.8, "gamma": 0.05, "lambda": 0.9},
     {"lambda": 0.9}, {"density": 0.8, "gamma": 0.05}, [1.0, 0.5, 0.8]),
    ("breadcrumbs_ties", "breadcrumbs_ties", {"density": 0.7, "gamma": 0.1, "lambda": 1.0},
     {}, {"density": 0.7, "gamma": 0.1}, [1.0, 0.5, 0.8]),
])
def test_sce_and_breadcrumbs_against_mergekit_on_float32_checkpoints(tmp_path, ours, theirs, settings,
                                                                     shared, per_model, weights):
    """Both compute base + a weighted (agreeing) sum of the selected task vectors in float32,
    each in its own order: within gamma(2K + 3) of exact each, relative to the magnitudes
    combined (as the task-vector methods' test). The selections are the same sets here: the
    float32 magnitudes and variances have no ties at the cuts."""
    pytest.importorskip("mergekit")
    _, subs = tiny_llama_runs(tmp_path, 3)
    base = tmp_path / "base"
    theirs_t = mergekit_merge(_mk(theirs, subs, base, per_model, shared, weights), tmp_path / "mk")
    merge(ours, subs, tmp_path / "om", base=base, **({"weights": weights} if weights else {}), **settings)
    ours_t, b, runs = load(tmp_path / "om"), load(base), [load(s) for s in subs]
    w = weights or [1.0] * 3
    lam = settings.get("lambda", 1.0)
    tol = 2 * gamma(2 * len(subs) + 3)
    for n in ours_t:
        scale = b[n].abs() + lam * sum(wi * ((r[n] - b[n]).abs() + r[n].abs() + b[n].abs())
                                       for wi, r in zip(w, runs))
        assert bool(((ours_t[n] - theirs_t[n]).abs() <= tol * scale).all()), n
        assert not torch.equal(ours_t[n], b[n]) or n.endswith("norm.weight")


def test_sce_selects_the_highest_variances_and_weighs_by_mean_square(tmp_path):
    """A hand case: four positions; select 0.5 keeps the two of highest variance; run
    weights are the mean squares of the selected task vectors; the sign election erases."""
    from safetensors.torch import save_file
    import json
    def write(d, t):
        d.mkdir()
        save_file({"w": torch.tensor(t, dtype=torch.float32)}, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps({"model_type": "toy"}))
        return d
    base = write(tmp_path / "base", [0.0, 0.0, 0.0, 0.0])
    a = write(tmp_path / "a", [1.0, 0.25, 2.0, 0.0])
    b = write(tmp_path / "b", [-1.0, 0.25, 0.5, 0.0])
    merge("sce", [a, b], tmp_path / "o", base=base, select_topk=0.5)
    got = load(tmp_path / "o")["w"]
    # variances 1, 0, 0.5625, 0: int(0.5 x 2 nonzero) = 1 position kept, the first (the
    # largest variance); mean squares of the selected over the 4 positions: a 1/4, b 1/4,
    # weights 1/2 each; position 0's signs sum to 0 (>= 0 is +): only a agrees, 1 x 0.5 / 0.5
    assert got.tolist() == [1.0, 0.0, 0.0, 0.0]
    merge("sce", [a, b], tmp_path / "o2", base=base, select_topk=1.0)
    got = load(tmp_path / "o2")["w"]
    # all kept; mean squares a (1 + 1/16 + 4) / 4, b (1 + 1/16 + 1/4) / 4
    wa, wb = 5.0625 / 4, 1.3125 / 4
    wa, wb = wa / (wa + wb), wb / (wa + wb)
    want = [1.0, (0.25 * wa + 0.25 * wb) / (wa + wb), (2.0 * wa + 0.5 * wb) / (wa + wb), 0.0]
    assert got.tolist() == pytest.approx(want, rel=gamma(8))


@pytest.mark.parametrize("method,settings", [
    ("sce", {"select_topk": 0.3}), ("karcher", {}), ("multislerp", {}), ("breadcrumbs", {}),
    ("breadcrumbs_ties", {"density": 0.6, "gamma": 0.1}), ("della", {"density": 0.5, "epsilon": 0.2, "seed": 1}),
    ("della_linear", {"rescale": "l1", "seed": 2})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_same_bytes_at_any_chunking(tmp_path, method, settings, dtype):
    base, subs = make(tmp_path, k=3, dtype=dtype, step=0.02, moved=0.8)
    kw = {} if method == "karcher" else {"base": base}
    merge(method, subs, tmp_path / "a", **kw, **settings)
    merge(method, subs, tmp_path / "b", chunk_elements=97, **kw, **settings)
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
    for n in a:
        assert torch.equal(a[n].view(bits), b[n].view(bits)), n


def _della_tau(tmp_path, rows=200, cols=300):
    from safetensors.torch import save_file
    import json
    g = torch.Generator().manual_seed(3)
    out = []
    for name, t in [("base", torch.zeros(rows, cols)), ("run", torch.randn(rows, cols, generator=g))]:
        d = tmp_path / name
        d.mkdir()
        save_file({"w": t}, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps({"model_type": "toy"}))
        out.append(d)
    return out


def test_della_keeps_by_rank_in_distribution_and_as_mergekit_does(tmp_path):
    """One run of 200 rows x 300: the keep rate of each rank decile within its row is
    p = density - epsilon + 2 epsilon (r - 1) / (ncols - 1) averaged over the decile, within
    4 binomial standard deviations, for ours and for mergekit's della_magprune (its own
    torch.bernoulli draws); with rescale=paper each kept entry is tau / p (float32: one
    division, one rounding each)."""
    base, run = _della_tau(tmp_path)
    d, e = 0.4, 0.2
    merge("della_linear", [run], tmp_path / "o", base=base, density=d, epsilon=e, seed=5)
    tau = load(run)["w"]
    got = load(tmp_path / "o")["w"]
    kept = got != 0
    ncols = tau.shape[1]
    rank = tau.abs().argsort(1).argsort(1)  # 0 = smallest
    p = (d - e) + 2 * e * rank.double() / (ncols - 1)
    assert torch.allclose(got[kept].double(), (tau.double() / p.to(torch.float32).double())[kept],
                          rtol=gamma(3), atol=0)
    rates = {"ours": kept}
    try:
        from mergekit.sparsify import della_magprune
        torch.manual_seed(0)
        rates["mergekit"] = della_magprune(tau, density=d, epsilon=e) != 0
    except ImportError:
        pass
    for who, k in rates.items():
        for lo in range(0, ncols, ncols // 10):
            sel = (rank >= lo) & (rank < lo + ncols // 10)
            n = int(sel.sum())
            want = float(p[sel].mean())
            sd = (want * (1 - want) / n) ** 0.5
            assert abs(float(k[sel].double().mean()) - want) <= 4 * sd, (who, lo)
    # the draws depend on the seed; the L1 rescale restores each tensor's L1 norm
    merge("della_linear", [run], tmp_path / "o2", base=base, density=d, epsilon=e, seed=6)
    assert not torch.equal(load(tmp_path / "o2")["w"] != 0, kept)
    merge("della_linear", [run], tmp_path / "o3", base=base, density=d, epsilon=e, seed=5, rescale="l1")
    l1 = load(tmp_path / "o3")["w"]
    assert torch.equal(l1 != 0, kept)
    assert float(l1.double().abs().sum()) == pytest.approx(float(tau.double().abs().sum()),
                                                            rel=2 * gamma(tau.numel()) + gamma(4))


def test_della_ties_elects_signs_over_the_dropped_task_vectors(tmp_path):
    """della = each run's drop (its own counter-based draws, rank-dependent p, kept entries
    x 1/p) then TIES' election on the weighted sum and the disjoint mean, x lambda: against
    that reference built from the draws' definition (rng.draws), within one bf16-free float32
    computation's roundings (gamma(2K + 4) of the magnitudes combined)."""
    from ordermerge.merge import rng
    base, subs = make(tmp_path, k=3, dtype=torch.float32, step=0.05, moved=1.0)
    w, seed, d, e, lam = [1.0, 0.5, 2.0], 4, 0.5, 0.2, 0.8
    merge("della", subs, tmp_path / "t", base=base, weights=w, seed=seed, density=d, epsilon=e,
          **{"lambda": lam})
    got, b, runs = load(tmp_path / "t"), load(base), [load(s) for s in subs]
    for n in got:
        shape = b[n].shape
        ncols = shape[-1] if len(shape) == 2 else b[n].numel()
        idx = torch.arange(b[n].numel())
        dropped = []
        for i, r in enumerate(runs):
            tau = (r[n] - b[n]).reshape(-1, ncols)
            rank = tau.abs().argsort(dim=1, stable=True).argsort(dim=1, stable=True)
            p = ((d - e) + rank.double() * (2 * e / (ncols - 1))).reshape(-1)
            keep = rng.draws(seed, n, f"della{i}", idx).double() < p * 2.0 ** 53
            dropped.append(tau.reshape(-1).double() * keep / p.to(torch.float32).double())
        weighted = torch.stack([wi * t for wi, t in zip(w, dropped)])
        sign = torch.where(weighted.sum(0) >= 0, 1.0, -1.0).double()
        agree = weighted.sign() == sign
        mixed = (weighted * agree).sum(0)
        div = (torch.tensor(w, dtype=torch.float64)[:, None] * agree).sum(0)
        mixed = mixed / torch.where(div == 0, torch.ones_like(div), div)
        want = b[n].double().reshape(-1) + lam * mixed
        scale = b[n].double().abs().reshape(-1) + lam * sum(wi * t.abs() for wi, t in zip(w, dropped)) / min(w)
        assert ((got[n].double().reshape(-1) - want).abs() <= gamma(2 * len(w) + 6) * scale).all(), n
