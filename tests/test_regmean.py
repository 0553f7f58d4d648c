"""RegMean (merge/regmean.py, gram_info.py): the input Grams of a tiny Llama's linear layers
against their definition, the merge against the exact least-squares solution on a model
small enough to solve directly, alpha and the ridge, the checks of the Gram files, and the
command line."""
import json

import pytest
import torch
from safetensors.torch import save_file

from ordermerge.merge.engine import MergeError, merge
from ordermerge.merge.methods import method_id, parse_method_id
from ordermerge.merge.regmean import solve
from test_taskvec import load
from ulps import gamma


def test_the_id():
    assert method_id("regmean") == "regmean-n32-a0.9"
    assert parse_method_id("regmean-n8-a1.0-r1e-06") == ("regmean", {"rows": 8, "alpha": 1.0, "ridge": 1e-6})


def _layer(rows=50, d_in=6, d_out=4, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(rows, d_in, generator=g, dtype=torch.float64) * (1 + i) for i in range(k)]
    ws = [torch.randn(d_out, d_in, generator=g, dtype=torch.float64) for _ in range(k)]
    return xs, ws


def test_alpha_one_is_the_exact_least_squares_merge():
    """min_W sum_i |X_i W^T - X_i W_i^T|^2, solved by lstsq on the stacked system, equals the
    closed form from the Grams G_i = X_i^T X_i (float64: within a condition-number multiple
    of the float64 unit roundoff)."""
    xs, ws = _layer()
    grams = [x.T @ x for x in xs]
    got = solve(ws, grams, [1.0] * 3, alpha=1.0, ridge=0.0)
    a = torch.cat(xs)
    b = torch.cat([x @ w.T for x, w in zip(xs, ws)])
    want = torch.linalg.lstsq(a, b).solution.T
    cond = float(torch.linalg.cond(sum(grams)))
    assert torch.allclose(got, want, rtol=0, atol=cond * gamma(64, torch.float64) * float(want.abs().max()))
    # alpha 0: each input feature's Gram-weighted average of the runs' columns
    got0 = solve(ws, grams, [1.0] * 3, alpha=0.0, ridge=0.0)
    d = torch.stack([torch.diagonal(g) for g in grams])  # [K, in]
    want0 = sum(w * d[i] for i, w in enumerate(ws)) / d.sum(0)
    assert torch.allclose(got0, want0, rtol=1e-12, atol=0)
    # equal Grams: the plain average
    same = solve(ws, [grams[0]] * 3, [1 / 3] * 3, alpha=0.9, ridge=0.0)
    assert torch.allclose(same, sum(ws) / 3, rtol=1e-10, atol=1e-12)


def test_a_singular_gram_is_refused_unless_the_ridge_is_set():
    xs, ws = _layer(rows=2, d_in=6)  # 3 runs x 2 rows: rank 6 at most... make it 1 run's rows
    grams = [torch.zeros(6, 6, dtype=torch.float64) for _ in xs]
    grams[0][0, 0] = 1.0
    with pytest.raises(MergeError, match="regmean: tensor 'w': the runs' summed input Gram is singular"):
        solve(ws, grams, [1.0] * 3, alpha=1.0, ridge=0.0, name="w")
    got = solve(ws, grams, [1.0] * 3, alpha=1.0, ridge=1e-6, name="w")
    assert bool(torch.isfinite(got).all())


def _checkpoint(d, tensors, grams=None, model="m", rows=4, ids=("a",)):
    d.mkdir()
    save_file(tensors, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_type": "toy"}))
    if grams is not None:
        g = d.parent / f"{d.name}-gram"
        g.mkdir()
        save_file(grams, str(g / "model.safetensors"))
        from ordermerge.provenance import file_hashes
        (g / "gram.json").write_text(json.dumps({
            "model": str(d), "rows": rows, "row_ids": list(ids),
            "model_sha256": file_hashes(d, ["model.safetensors"])}))
        return g


def test_the_engine_solves_linear_weights_and_averages_the_rest(tmp_path):
    xs, ws = _layer(k=3)
    g32 = [(x.T @ x / x.shape[0]).float() for x in xs]
    norms = [torch.randn(4) for _ in range(3)]
    grams = []
    runs = []
    for i in range(3):
        grams.append(_checkpoint(tmp_path / f"r{i}", {"lin.weight": ws[i].float(), "norm.weight": norms[i]},
                                 {"lin.weight": g32[i]}, rows=32))
        runs.append(tmp_path / f"r{i}")
    r = merge("regmean", runs, tmp_path / "o", aux=grams, alpha=1.0)
    assert r["method_id"] == "regmean-n32-a1.0" and r["input_gram"] == [str(g) for g in grams]
    got = load(tmp_path / "o")
    want = solve([w.float() for w in ws], g32, [1 / 3] * 3, alpha=1.0, ridge=0.0).float()
    assert torch.equal(got["lin.weight"], want)
    avg = load(runs[0])["norm.weight"]
    for i in (1, 2):
        avg = avg + load(runs[i])["norm.weight"]
    assert torch.equal(got["norm.weight"], avg / 3)
    # the same bytes at any chunking
    merge("regmean", runs, tmp_path / "o2", aux=grams, alpha=1.0, chunk_elements=5)
    assert all(torch.equal(got[n], load(tmp_path / "o2")[n]) for n in got)
    # refused: Grams in another order, of another shape, over other rows, missing
    for aux, message in [
            ([grams[1], grams[0], grams[2]], "is the Grams of sub-model 2"),
            (grams[:2], r"regmean needs --gram with one file per sub-model \(3\), got 2")]:
        with pytest.raises(MergeError, match=message):
            merge("regmean", runs, tmp_path / "bad", aux=aux, alpha=1.0)
    with pytest.raises(MergeError, match="over 32 rows, but the method's rows setting is 8"):
        merge("regmean", runs, tmp_path / "bad", aux=grams, rows=8)
    bad = _checkpoint(tmp_path / "r3", {"lin.weight": ws[0].float(), "norm.weight": norms[0]},
                      {"lin.weight": torch.zeros(5, 5)}, rows=32)
    with pytest.raises(MergeError, match=r"tensor 'lin.weight' is \[5, 5\] F32, expected \[6, 6\] F32"):
        merge("regmean", [runs[0], runs[1], tmp_path / "r3"], tmp_path / "bad", aux=[grams[0], grams[1], bad])
    assert not (tmp_path / "bad").exists()


def test_the_grams_of_a_tiny_llama_are_the_inputs_outer_products(tmp_path):
    """gram_info on a tiny Llama over 3 rows: every untied linear weight has a Gram; q, k and
    v (one input) have the same; each is the mean of x x^T over the tokens the layer saw,
    recomputed here from hooks of our own; and a LoRA-free merge of two runs with it runs."""
    from ordermerge.data.registry import get_task
    from ordermerge.gram_info import linear_grams
    from ordermerge.models import build_tiny, train_tokenizer
    from ordermerge.objectives import objective_for
    task = get_task("gsm8k")
    rows = [{"id": str(i), "question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}
            for i in range(1, 4)]
    tok = train_tokenizer([task.prompt(r) + " " + task.target(r) for r in rows], 120)
    arch = {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 128, "tie_word_embeddings": False}
    model = build_tiny(arch, tok, seed=0).float()
    obj = objective_for(task, tok, 64)
    grams, tokens = linear_grams(model, obj, rows)
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(grams) == linear and "lm_head.weight" in grams
    layer = "model.layers.0.self_attn."
    assert torch.equal(grams[layer + "q_proj.weight"], grams[layer + "k_proj.weight"])
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: seen.setdefault(n, []).append(a[0].reshape(-1, a[0].shape[-1]).double()))
             for n, m in model.named_modules() if n == "model.layers.0.mlp.down_proj"]
    with torch.no_grad():
        for r in rows:
            obj.losses(model, obj.collate([obj.encode(r)]))
    for h in hooks:
        h.remove()
    x = torch.cat(seen["model.layers.0.mlp.down_proj"])
    assert x.shape[0] == tokens
    want = (x.T @ x / tokens).float()
    got = grams["model.layers.0.mlp.down_proj.weight"]
    # float64 sums of the same products in another grouping, rounded to float32 once each
    assert torch.allclose(got, want, rtol=2 ** -23, atol=float(want.abs().max()) * 2 ** -40)
    # tied embeddings: the LM head takes no Gram (it is the embedding, averaged)
    tied = build_tiny({**arch, "tie_word_embeddings": True}, tok, seed=0).float()
    assert "lm_head.weight" not in linear_grams(tied, obj, rows[:1])[0]
