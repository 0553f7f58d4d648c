"""Exact merges of LoRA runs (ordermerge/merge/lora_runs.py): every method of the registry
on the runs' updates ΔW_k = B_k A_k · alpha / r, against the dense merge of the runs'
``merge_and_unload()`` models; PEFT's ``add_weighted_adapter`` linear combination against
the exact average on a case worked by hand; chunk invariance; the SVD adapter."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ordermerge.merge.engine import merge, merge_into
from ordermerge.merge.methods import METHODS
from ordermerge.merge.st_io import MergeError

EPS32 = torch.finfo(torch.float32).eps
K = 3
# every method but the two that read per-run data of their own (Fisher's diagonal, greedy
# soup's validation records), with settings that keep and drop elements
SETTINGS = {"average": {}, "select": {"seed": 1}, "resample": {"seed": 1, "rounds": 2},
            "model_stock": {}, "task_arithmetic": {"lambda": 0.5},
            "ties": {"density": 0.4, "lambda": 1.0}, "ties_select": {"density": 0.4, "lambda": 1.0, "seed": 1},
            "dare_linear": {"drop": 0.5, "lambda": 0.5, "seed": 1},
            "dare_ties": {"drop": 0.5, "lambda": 1.0, "seed": 1},
            "dare_resample": {"drop": 0.5, "rounds": 1, "lambda": 1.0, "seed": 1}}


def random_adapter(base, out, seed: int, std: float, targets=("q_proj", "v_proj")):
    """A LoRA adapter (r 4, alpha 8) of the checkpoint `base` with both factors drawn
    normal(0, std) from `seed` (a trained adapter's B is not zero), saved in PEFT's format."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    m = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                       LoraConfig(r=4, lora_alpha=8, target_modules=list(targets)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    m.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A float32 tiny Llama base and K LoRA adapters of it (r 4, alpha 8: scale 2) whose
    factors are small integers, and the base with small dyadic weights: every ΔW_k and every
    W0 + ΔW_k is exact in float32, so the dense runs (PEFT's merge_and_unload) and the
    updates carry the same numbers and only the merges' own rounding can differ."""
    from peft import LoraConfig, get_peft_model, PeftModel
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("lora-merge")
    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, vocab_size=32,
                      max_position_embeddings=32)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-64, 65, p.shape) / 64)
    base = root / "base"
    model.save_pretrained(base)
    adapters, dense = [], []
    for k in range(K):
        m = get_peft_model(LlamaForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        g = torch.Generator().manual_seed(100 + k)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randint(-3, 4, p.shape, generator=g).float())
        a = root / f"run{k}"
        m.save_pretrained(a)
        adapters.append(a)
        d = root / f"dense{k}"
        PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base), a).merge_and_unload() \
            .save_pretrained(d)
        dense.append(d)
    return base, adapters, dense


def _weights(d):
    return load_file(d / "model.safetensors")


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_every_method_on_lora_runs_is_its_merge_of_the_merged_and_unloaded_runs(runs, tmp_path, method):
    """Dense: the method on W0 + ΔW_k (PEFT's merge_and_unload). Ours: W0 + the method on
    ΔW_k against a zero base. The task vectors are the same numbers (exact here), so the
    masks, signs and draws are the same; the results differ only by where W0 is added: at
    most (K + 1) float32 roundings of the magnitudes summed, per element."""
    base, adapters, dense = runs
    s = SETTINGS[method]
    needs_base = METHODS[method].needs_base
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rec = merge_into(tmp_path / "a", method, adapters, base=base if needs_base else None, **s)
    merge_into(tmp_path / "b", method, dense, base=base if needs_base else None, **s)
    ours, theirs, w0 = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(base)
    assert sorted(ours) == sorted(theirs) == sorted(w0)
    targeted = {n for n in w0 if ".q_proj." in n or ".v_proj." in n}
    assert rec["lora"]["targets"] == len(targeted) == 4 and rec["base"] == str(base)
    for n in w0:
        if n not in targeted:  # no run changes it: the base's bytes
            assert torch.equal(ours[n], w0[n]), n
            continue
        ws = torch.stack([_weights(d)[n] for d in dense])
        scale = w0[n].abs() + (ws - w0[n]).abs().amax(0)
        bound = (K + 1) * EPS32 * scale
        assert ((ours[n] - theirs[n]).abs() <= bound).all(), (n, (ours[n] - theirs[n]).abs().max())
        assert not torch.equal(ours[n], w0[n]), n  # the merge did change it


def test_a_lora_merge_does_not_depend_on_where_chunks_are_cut(runs, tmp_path):
    base, adapters, _ = runs
    outs = []
    for i, chunk in enumerate([None, 7, 100]):
        d = tmp_path / f"m{i}"
        d.mkdir()
        merge_into(d, "dare_resample", adapters, base=base, chunk_elements=chunk,
                   drop=0.5, rounds=1, seed=3, **{"lambda": 1.0})
        outs.append((d / "model.safetensors").read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_peft_linear_combination_is_not_the_average_of_the_updates(tmp_path):
    """One 1x1 layer, W0 = 0, r = alpha = 1 (scale 1). Run 1: A = B = 1, ΔW = 1. Run 2:
    A = B = 3, ΔW = 9. The average of the updates is 5. PEFT's linear combination with
    weights 1/2 sums √(1/2)·A and √(1/2)·B: (√½·1 + √½·3)² = 8 = ½(1·1 + 1·3 + 3·1 + 3·3), the
    cross terms B_1 A_2 and B_2 A_1 included. Ours is 5."""
    from peft import LoraConfig, PeftModel, get_peft_model

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = torch.nn.Linear(1, 1, bias=False)
            self.q_proj.weight.data.zero_()

        def forward(self, x):
            return self.q_proj(x)

    base = tmp_path / "base"
    base.mkdir()
    save_file({"q_proj.weight": torch.zeros(1, 1)}, str(base / "model.safetensors"))
    (base / "config.json").write_text("{}\n")
    paths = []
    for i, v in enumerate([1.0, 3.0]):
        m = get_peft_model(One(), LoraConfig(r=1, lora_alpha=1, target_modules=["q_proj"]))
        with torch.no_grad():
            m.base_model.model.q_proj.lora_A["default"].weight.fill_(v)
            m.base_model.model.q_proj.lora_B["default"].weight.fill_(v)
        paths.append(tmp_path / f"a{i}")
        m.save_pretrained(paths[-1])
    out = tmp_path / "ours"
    out.mkdir()
    merge_into(out, "average", paths, base=base)
    assert _weights(out)["q_proj.weight"].item() == 5.0

    peft = PeftModel.from_pretrained(One(), paths[0], adapter_name="a0")
    peft.load_adapter(paths[1], adapter_name="a1")
    peft.add_weighted_adapter(["a0", "a1"], [0.5, 0.5], "combined", combination_type="linear")
    peft.set_adapter("combined")
    delta = peft.base_model.model.q_proj.get_delta_weight("combined")
    assert delta.item() == pytest.approx(8.0, rel=4 * EPS32)


def test_the_merged_update_as_an_adapter_of_rank_r_prime(runs, tmp_path):
    """The SVD adapter: at rank K·r (the rank of a sum of K rank-r updates at most) it
    reproduces the merged update to float rounding; at rank 1 its error is Eckart-Young's
    √(Σ_{i>1} σ_i²) / ||ΔW||_F, and PEFT loads it."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    base, adapters, _ = runs
    w0 = _weights(base)
    errs = {}
    for rank in (K * 4, 1):
        d = tmp_path / f"r{rank}"
        d.mkdir()
        rec = merge_into(d, "average", adapters, base=base, adapter_rank=rank)
        svd = rec["lora"]["svd"]
        assert svd["rank"] == rank and len(svd["relative_error"]) == 4
        errs[rank] = svd
        merged = _weights(d)
        name = "model.layers.0.self_attn.q_proj.weight"
        delta = merged[name].double() - w0[name].double()
        sv = torch.linalg.svdvals(delta)
        expected = float(sv[rank:].square().sum().sqrt() / sv.square().sum().sqrt())
        # the merged update itself was rounded to float32 once (W0 + ΔW is written): its
        # singular values move by ||W0 + ΔW||·eps at most
        assert svd["relative_error"][name] == pytest.approx(
            expected, abs=4 * EPS32 * float(merged[name].norm() / delta.norm()))
        m = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base), d / "adapter")
        got = m.base_model.model.model.layers[0].self_attn.q_proj.get_delta_weight("default")
        cfg = json.loads((d / "adapter" / "adapter_config.json").read_text())
        assert (cfg["r"], cfg["lora_alpha"]) == (rank, rank)
        rel = float((got.double() - delta).norm() / delta.norm())
        assert rel == pytest.approx(expected, abs=1e-5)
    assert errs[K * 4]["max_relative_error"] < 1e-6 < errs[1]["max_relative_error"]


def test_lora_merges_refuse_what_they_cannot_read(runs, tmp_path):
    base, adapters, dense = runs
    with pytest.raises(MergeError, match=r"is a full checkpoint and .* a LoRA adapter"):
        merge_into(tmp_path, "average", [dense[0], adapters[1]], base=base)
    rs = tmp_path / "rslora"
    rs.mkdir()
    for f in adapters[0].iterdir():
        (rs / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((rs / "adapter_config.json").read_text())
    (rs / "adapter_config.json").write_text(json.dumps({**cfg, "use_rslora": True}))
    with pytest.raises(MergeError, match=r"adapter_config.json: use_rslora is True"):
        merge_into(tmp_path, "average", [rs, adapters[1]], base=base)
    with pytest.raises(MergeError, match=r"adapter_rank: the sub-models are full checkpoints"):
        merge_into(tmp_path, "average", dense[:2], adapter_rank=2)
    with pytest.raises(MergeError, match=r"adapter_rank 99: expected an integer from 1 to 16"):
        merge_into(tmp_path, "average", adapters, base=base, adapter_rank=99)
    # the base the adapters name is the one used when none is given; the recipe names it
    out = tmp_path / "named"
    rec = merge("average", adapters, out)
    assert rec["base"] == str(base) and (out / "config.json").is_file()


def test_a_folded_run_is_the_merge_of_that_one_run(runs, tmp_path):
    """Evaluation and scoring read a LoRA run folded into its base (lora_runs.folded),
    without the merge engine: the bytes of the engine's merge of that run alone."""
    from ordermerge.merge.lora_runs import fold_into, folded
    base, adapters, _ = runs
    (tmp_path / "fold").mkdir()
    (tmp_path / "merge").mkdir()
    fold_into(tmp_path / "fold", adapters[1])  # its base: the one its adapter_config names
    merge_into(tmp_path / "merge", "average", [adapters[1]], base=base)
    for f in ("model.safetensors", "config.json"):
        assert (tmp_path / "fold" / f).read_bytes() == (tmp_path / "merge" / f).read_bytes(), f
    with folded(adapters[1]) as d:
        assert (d / "model.safetensors").read_bytes() == (tmp_path / "fold" / "model.safetensors").read_bytes()
        kept = d
    assert not kept.exists()  # the temporary model is removed
    with folded(base) as d:  # a full checkpoint is read where it is
        assert d == base


def test_the_data_aware_merges_read_lora_runs_too(runs, tmp_path):
    """Fisher merging with each run's Fisher (of its folded model: every weight of the base,
    fisher_info; made here from seeded draws, with the record the merge checks: the
    adapter's weight file hashed), and greedy soup's merge of the runs it keeps (the
    uniform average of those runs), against the dense merges of the merged-and-unloaded runs."""
    from ordermerge.fisher_info import write_run_data
    from ordermerge.merge.lora_runs import weight_files
    from ordermerge.provenance import file_hashes
    base, adapters, dense = runs
    w0 = _weights(base)
    fishers = {"lora": [], "dense": []}
    for k in range(K):
        g = torch.Generator().manual_seed(7 + k)
        f = {n: torch.rand(t.shape, generator=g) + 0.01 for n, t in w0.items()}
        for kind, run in (("lora", adapters[k]), ("dense", dense[k])):
            d = tmp_path / f"fisher-{kind}{k}"
            d.mkdir()
            write_run_data(d, f, {"model": str(run), "task": "gsm8k", "rows": 4, "row_ids": ["a"],
                                "train": "t", "model_sha256": file_hashes(run, [x.name for x in weight_files(run)])})
            fishers[kind].append(d)
    for method, kw in (("fisher", {"rows": 4}), ("greedy_soup", {"weights": [0.5, 0.5, 0.0]})):
        outs = {}
        for kind, subs in (("lora", adapters), ("dense", dense)):
            outs[kind] = tmp_path / f"{method}-{kind}"
            outs[kind].mkdir()
            extra = {"aux": fishers[kind]} if method == "fisher" else {}
            merge_into(outs[kind], method, subs, **kw, **extra)
        ours, theirs = _weights(outs["lora"]), _weights(outs["dense"])
        for n in w0:
            ws = torch.stack([_weights(d)[n] for d in dense])
            bound = (K + 1) * EPS32 * (w0[n].abs() + (ws - w0[n]).abs().amax(0))
            assert ((ours[n] - theirs[n]).abs() <= bound).all(), (method, n)


def test_ordermerge_merge_takes_lora_runs_and_writes_their_adapter(runs, tmp_path):
    import subprocess
    import sys
    base, adapters, _ = runs
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "ordermerge.cli", "merge", "--method", "select",
                           "--seed", "2", "--adapter-rank", "3", "--out", str(out), *map(str, adapters)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((out / "merge.json").read_text())
    assert rec["base"] == str(base) and rec["lora"]["svd"]["rank"] == 3
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 3
    direct = tmp_path / "direct"
    direct.mkdir()
    merge_into(direct, "select", adapters, seed=2)
    assert (out / "model.safetensors").read_bytes() == (direct / "model.safetensors").read_bytes()
