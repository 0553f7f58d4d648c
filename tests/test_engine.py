"""The streaming merge engine: layouts, chunk and thread invariance, errors, the CLI."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from ordermerge.cli import main as cli
from ordermerge.merge import fused, fused_tv, rng
from ordermerge.merge.methods import get
from ordermerge.merge.engine import MergeError, merge
from ordermerge.merge.st_io import Checkpoint
from ordermerge.utils import sha256_file

SHAPES = {"embed.weight": (37, 16), "layers.0.w": (16, 48), "layers.0.norm": (16,),
          "layers.1.w": (48, 16), "scalar": (), "empty": (0, 4)}


def tensors(seed, dtype=torch.bfloat16, base=None, frac_changed=0.7):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in SHAPES.items():
        t = torch.randn(shape, generator=g).to(dtype)
        if base is not None:  # a sub-model: most elements moved, the rest exactly the base's
            keep = torch.rand(shape, generator=g) >= frac_changed
            t = torch.where(keep, base[name], base[name] + t * 0.01)
        out[name] = t
    out["position_ids"] = torch.arange(7)
    return out


def write_ckpt(path, ts, shards=1):
    path.mkdir(parents=True)
    names = sorted(ts)
    if shards == 1:
        save_file(ts, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for s in range(shards):
            part = {n: ts[n] for n in names[s::shards]}
            f = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            save_file(part, str(path / f), metadata={"format": "pt"})
            weight_map.update({n: f for n in part})
        (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps({"dtype": "bfloat16", "model_type": "toy"}))
    return path


@pytest.fixture
def ckpts(tmp_path):
    base_t = tensors(100)
    base = write_ckpt(tmp_path / "base", base_t)
    subs = [write_ckpt(tmp_path / f"s{i}", tensors(i, base=base_t), shards=1 + i % 2)
            for i in range(3)]
    return base, subs, base_t, [load_file(str(s / "model.safetensors")) if i % 2 == 0 else None
                                for i, s in enumerate(subs)]


def reference(method, sub_tensors, base_t, probs, seed, rounds):
    """An in-memory merge of whole tensors with the same counter-based draws."""
    out = {}
    sampler = rng.Sampler(probs)
    for name in sub_tensors[0]:
        stack = torch.stack([t[name].reshape(-1) for t in sub_tensors])
        if not stack.is_floating_point():
            out[name] = sub_tensors[0][name]
            continue
        if method == "average" and len(set(probs)) == 1:
            v = (sum(s.float() for s in stack) / len(probs)).to(stack.dtype)
        elif method == "average":
            v = sum(p * s.float() for p, s in zip(probs, stack)).to(stack.dtype)
        else:
            idx = torch.arange(stack.shape[1])
            v = stack[sampler.choices(seed, name, 0, idx), idx]
            for r in range(1, rounds + 1 if method == "resample" else 1):
                at_base = v == base_t[name].reshape(-1)
                redraw = stack[sampler.choices(seed, name, r, idx), idx]
                v = torch.where(at_base, redraw, v)
        out[name] = v.reshape(sub_tensors[0][name].shape)
    return out


def settings(method, **values):
    """The settings among `values` that `method` takes (the engine refuses others)."""
    return {k: v for k, v in values.items() if k in {s.name for s in get(method).settings}}


def all_tensors(path):
    files = sorted(path.glob("*.safetensors"))
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


@pytest.mark.parametrize("method,probs", [("average", [0.2, 0.3, 0.5]), ("average", [1 / 3] * 3),
                                          ("select", [0.2, 0.3, 0.5]), ("select", [1 / 3] * 3),
                                          ("resample", [0.2, 0.3, 0.5])])
def test_engine_matches_reference_for_sharded_inputs(ckpts, tmp_path, method, probs):
    base, subs, base_t, _ = ckpts
    sub_t = [all_tensors(s) for s in subs]
    recipe = merge(method, subs, tmp_path / "out", base=base, weights=probs,
                   chunk_elements=100, **settings(method, seed=4, rounds=2))
    got = all_tensors(tmp_path / "out")
    want = reference(method, sub_t, base_t, probs, 4, 2)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name
    assert recipe["stats"]["copied_non_float"] == 1
    card = (tmp_path / "out" / "README.md").read_text()
    assert method in card
    rec = json.loads((tmp_path / "out" / "merge.json").read_text())
    hashed = rec["provenance"]["inputs_sha256"]
    assert hashed[str(subs[1] / "model-00001-of-00002.safetensors")] == \
        sha256_file(subs[1] / "model-00001-of-00002.safetensors")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "toy"


def _set_threads(n: int) -> None:
    torch.set_num_threads(n)
    fused.set_threads(n)


@pytest.mark.parametrize("method", ["average", "select", "resample"])
def test_bytes_do_not_depend_on_chunk_size_threads_or_shards(ckpts, tmp_path, method, monkeypatch):
    base, subs, _, _ = ckpts
    digests = set()
    threads = torch.get_num_threads()
    try:
        for i, (chunk, nthreads) in enumerate([(7, 1), (1000, 2), (None, 1)]):
            _set_threads(nthreads)
            merge(method, subs, tmp_path / f"o{i}", base=base, chunk_elements=chunk, **settings(method, seed=9, rounds=3))
            digests.add(sha256_file(tmp_path / f"o{i}" / "model.safetensors"))
    finally:
        _set_threads(threads)
    # the torch path (no numba, or a dtype the kernels lack) writes the same bytes
    monkeypatch.setattr(fused, "available", lambda dtype: False)
    monkeypatch.setattr(fused, "average_available", lambda dtype: False)
    merge(method, subs, tmp_path / "torch", base=base, chunk_elements=500, **settings(method, seed=9, rounds=3))
    digests.add(sha256_file(tmp_path / "torch" / "model.safetensors"))
    assert len(digests) == 1
    monkeypatch.undo()
    # a sharded output holds the same tensors
    merge(method, subs, tmp_path / "sharded", base=base, max_shard_bytes=1500, **settings(method, seed=9, rounds=3))
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    one, many = all_tensors(tmp_path / "o0"), all_tensors(tmp_path / "sharded")
    assert one.keys() == many.keys() and all(torch.equal(one[k], many[k]) for k in one)


def test_output_dtype_and_memory_budget(ckpts, tmp_path):
    base, subs, _, _ = ckpts
    r = merge("average", subs, tmp_path / "f32", dtype="float32", memory_budget=4096)
    out = all_tensors(tmp_path / "f32")
    assert out["embed.weight"].dtype == torch.float32 and out["position_ids"].dtype == torch.int64
    assert json.loads((tmp_path / "f32" / "config.json").read_text())["dtype"] == "float32"
    # a 4 KiB budget cuts the 37x16 and 16x48 tensors into several chunks
    assert r["chunk_elements"] < 16 * 48 and r["stats"]["chunks"] > len(SHAPES) + 1


def _corrupt(subs, tmp_path, case):
    if case == "truncated":
        f = subs[0] / "model.safetensors"
        f.write_bytes(f.read_bytes()[:-10])
    elif case == "garbage":
        (subs[0] / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    elif case == "missing":
        t = tensors(0)
        del t["layers.1.w"]
        subs[0] = write_ckpt(tmp_path / "m", t)
    elif case == "shape":
        t = tensors(0)
        t["layers.0.w"] = t["layers.0.w"].T.contiguous()
        subs[0] = write_ckpt(tmp_path / "m", t)
    elif case == "dtype":
        t = tensors(0)
        t["layers.0.norm"] = t["layers.0.norm"].float()
        subs[0] = write_ckpt(tmp_path / "m", t)
    elif case == "nonfloat":
        t = tensors(0)
        t["position_ids"] = torch.arange(1, 8)
        subs[0] = write_ckpt(tmp_path / "m", t)
    elif case == "empty_dir":
        subs[0] = tmp_path / "empty"
        subs[0].mkdir()
    return subs


@pytest.mark.parametrize("case,kw,match", [
    ("truncated", {}, r"truncated: tensor '.*' ends at byte"),
    ("garbage", {}, "corrupt safetensors header"),
    ("missing", {}, r"tensor 'layers.1.w' is in .*s1.* but missing from .*m"),
    ("shape", {}, r"tensor 'layers.0.w': .*m/model.safetensors has \[48, 16\] BF16"),
    ("dtype", {}, r"tensor 'layers.0.norm': .*m/model.safetensors has \[16\] F32"),
    ("nonfloat", {"method": "select"}, "non-float tensor 'position_ids' differs"),
    ("empty_dir", {}, "no model.safetensors"),
    (None, {"weights": [0.5, 0.5]}, "probabilities: 2 values for 3 sub-models"),
    (None, {"weights": [0.5, 0.6, -0.1]}, "must be non-negative"),
    (None, {"weights": [0.3, 0.3, 0.3]}, "sum to 1"),
    (None, {"base": None}, "resample needs --base"),
    (None, {"k": 1}, "resample needs at least 2 sub-models"),
    (None, {"method": "select", "k": 1}, "select needs at least 2 sub-models"),
    (None, {"method": "median"}, "unknown merge method"),
])
def test_bad_input_names_the_problem_and_leaves_nothing(ckpts, tmp_path, case, kw, match):
    base, subs, _, _ = ckpts
    subs = _corrupt(list(subs), tmp_path, case)
    kw = {"method": "resample", "base": base, **kw}
    subs = subs[:kw.pop("k", len(subs))]
    method = kw.pop("method")
    with pytest.raises(MergeError, match=match):
        merge(method, subs, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_existing_output_is_refused_unless_overwrite(ckpts, tmp_path):
    base, subs, _, _ = ckpts
    merge("average", subs, tmp_path / "out")
    with pytest.raises(MergeError, match="already exists"):
        merge("average", subs, tmp_path / "out")
    merge("select", subs, tmp_path / "out", overwrite=True)
    assert json.loads((tmp_path / "out" / "merge.json").read_text())["method"] == "select"


def test_cli(ckpts, tmp_path, capsys):
    base, subs, _, _ = ckpts
    out = tmp_path / "cli"
    assert cli(["merge", "--method", "resample", "--base", str(base), "--rounds", "2", "--seed", "9",
                "--memory-budget", "64KiB", "-o", str(out), *map(str, subs)]) == 0
    merge("resample", subs, tmp_path / "lib", base=base, seed=9, rounds=2)
    assert sha256_file(out / "model.safetensors") == sha256_file(tmp_path / "lib" / "model.safetensors")
    assert cli(["merge", "--method", "select", "--probs", "1,0", "-o", str(tmp_path / "x"),
                *map(str, subs)]) == 1
    assert "probabilities: 2 values for 3 sub-models" in capsys.readouterr().err
    assert cli(["merge", "--method", "average", "--probs", "0.5,0.5,0", "-o",
                str(tmp_path / "y"), *map(str, subs)]) == 2


HEAVY = ("torch", "numpy", "numba", "transformers", "safetensors", "jsonschema", "yaml")


def test_help_and_argument_errors_import_nothing_heavy():
    """Every subcommand's --help and an argument error of each kind, in one fresh
    interpreter: none imports torch or another heavy library (they take 1-2 s to import,
    so --help would too)."""
    code = f"""
import contextlib, io, json, sys
from ordermerge.cli import main
runs = []
for argv in [["--help"], *[[c, "--help"] for c in ("merge", "train", "audit", "gguf", "plan")],
             ["merge", "--method", "nope", "-o", "x", "a", "b"],
             ["merge", "--method", "select", "--weights", "0.5,0.5", "-o", "x", "a", "b"],
             ["merge", "--method", "average", "--memory-budget", "1KiB", "-o", "x", "a"],
             ["train", "--task", "t"]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    runs.append([argv, code, out.getvalue(), err.getvalue()])
print(json.dumps({{"runs": runs, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["heavy"] == [], res
    codes = {" ".join(argv): (code, out, err) for argv, code, out, err in res["runs"]}
    assert all(codes[f"{c} --help"][0] == 0 for c in ("merge", "train", "audit", "gguf", "plan"))
    assert "--memory-budget" in codes["merge --help"][1] and "--order" in codes["train --help"][1]
    assert codes["merge --method nope -o x a b"][0] == 2
    assert "neither a method name" in codes["merge --method nope -o x a b"][2]
    assert "takes --probs" in codes["merge --method select --weights 0.5,0.5 -o x a b"][2]
    assert "below the floor of 64KiB" in codes["merge --method average --memory-budget 1KiB -o x a"][2]
    assert "required" in codes["train --task t"][2]


def test_merged_tiny_llama_loads_and_its_logits_match_the_reference(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    base_model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    base_model.save_pretrained(tmp_path / "base")
    base_sd = {k: v.clone() for k, v in base_model.state_dict().items()}
    subs, sub_sds = [], []
    for i in range(3):
        m = LlamaForCausalLM(cfg).to(torch.bfloat16)
        g = torch.Generator().manual_seed(i)
        sd = {}
        for k, v in base_sd.items():
            moved = torch.rand(v.shape, generator=g) < 0.6
            sd[k] = torch.where(moved, v + torch.randn(v.shape, generator=g).to(v.dtype) * 0.02, v)
        m.load_state_dict(sd)
        m.save_pretrained(tmp_path / f"s{i}")
        subs.append(tmp_path / f"s{i}")
        sub_sds.append({k: v for k, v in m.state_dict().items()})
    merge("resample", subs, tmp_path / "out", base=tmp_path / "base", seed=3, rounds=1,
          chunk_elements=300)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert merged.dtype == torch.bfloat16
    ref_sd = reference("resample", sub_sds, base_sd, [1 / 3] * 3, 3, 1)
    # built the way from_pretrained builds it (a module cast with .to() would also cast the
    # rotary buffers to bf16)
    ref = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    ref.load_state_dict(ref_sd)
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(merged(ids).logits, ref(ids).logits)
    out = merged.generate(ids[:1, :3], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_without_cuda_is_a_clear_error(ckpts, tmp_path):
    base, subs, _, _ = ckpts
    with pytest.raises(MergeError, match="CUDA is not available"):
        merge("select", subs, tmp_path / "out", device="cuda")
    assert not (tmp_path / "out").exists()


def _raw_safetensors(path, entries, data: bytes):
    """A safetensors file written by hand: `entries` name -> (dtype, shape, begin, end)."""
    import struct
    header = {n: {"dtype": d, "shape": list(s), "data_offsets": [b, e]}
              for n, (d, s, b, e) in entries.items()}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("entries, extra, message", [
    # the second tensor's range overlaps the first's by one element
    ({"a": ("BF16", (4,), 0, 8), "b": ("BF16", (4,), 6, 14)}, b"",
     "tensor 'b' takes data bytes 6..14, where the tensors before it end at byte 8"),
    # both shifted by 2 bytes: the first range does not start the data
    ({"a": ("BF16", (4,), 2, 10), "b": ("BF16", (4,), 10, 18)}, b"",
     "tensor 'a' takes data bytes 2..10, where the tensors before it end at byte 0"),
    # a gap between the two
    ({"a": ("BF16", (4,), 0, 8), "b": ("BF16", (4,), 10, 18)}, b"",
     "tensor 'b' takes data bytes 10..18, where the tensors before it end at byte 8"),
    # bytes after the last tensor
    ({"a": ("BF16", (4,), 0, 8), "b": ("BF16", (4,), 8, 16)}, b"\0\0",
     "the tensors' data end at byte"),
])
def test_data_offsets_off_the_safetensors_tiling_are_refused(tmp_path, entries, extra, message):
    """A header whose data_offsets overlap, are shifted or leave bytes over was merged (the
    output loaded); the safetensors library refuses the same file ("invalid offset"). Now
    it is one line naming the file and the tensor, and nothing is written."""
    subs = []
    for i in range(2):
        d = tmp_path / f"s{i}"
        d.mkdir()
        _raw_safetensors(d / "model.safetensors", entries, bytes(range(18)) + extra)
        (d / "config.json").write_text("{}")
        subs.append(d)
    with pytest.raises(MergeError) as e:
        merge("average", subs, tmp_path / "out")
    assert str(e.value).startswith(f"{subs[0] / 'model.safetensors'}: ") and message in str(e.value)
    assert "not a safetensors file" in str(e.value) and not (tmp_path / "out").exists()
    # the same tensors tiled as the format requires are read
    good = tmp_path / "good"
    good.mkdir()
    _raw_safetensors(good / "model.safetensors", {"a": ("BF16", (4,), 0, 8),
                                                  "b": ("BF16", (4,), 8, 16)}, bytes(range(16)))
    assert sorted(Checkpoint(good).tensors) == ["a", "b"]


@pytest.mark.parametrize("how", ["tied_config", "same_bytes", "untied"])
def test_tied_or_shared_tensors_are_merged_once(tmp_path, how):
    """A tied model saved with both the embeddings and lm_head, or two names stored at the
    same bytes: both names get the same draws, so the same merged tensor."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 8, generator=g).to(torch.bfloat16)
    subs = []
    for i in range(4):
        emb = torch.where(torch.rand(40, 8, generator=g) < 0.7, base + 0.1 * (i + 1), base)
        emb = emb.to(torch.bfloat16)
        d = tmp_path / f"s{i}"
        d.mkdir()
        if how == "same_bytes":
            data = emb.view(torch.int16).numpy().tobytes()
            _raw_safetensors(d / "model.safetensors",
                             {"model.embed_tokens.weight": ("BF16", (40, 8), 0, len(data)),
                              "lm_head.weight": ("BF16", (40, 8), 0, len(data))}, data)
        else:
            save_file({"model.embed_tokens.weight": emb, "lm_head.weight": emb.clone()},
                      str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps({"tie_word_embeddings": how == "tied_config"}))
        subs.append(d)
    r = merge("select", subs, tmp_path / "out", seed=3)
    out = load_file(str(tmp_path / "out" / "model.safetensors"))  # two separate copies
    same = torch.equal(out["lm_head.weight"], out["model.embed_tokens.weight"])
    if how == "untied":
        assert not same and r["stats"]["shared"] == {}
    else:  # the first name in sorted order keys the draws
        pair = ["lm_head.weight", "model.embed_tokens.weight"]
        want = dict([pair[::-1]]) if how == "same_bytes" else dict([pair])
        assert same and r["stats"]["shared"] == want


# every method, on both paths: the fused kernels count NaN and Inf in their own pass (the
# average and the task-vector kernels in what they write, select and resample in what they
# read); the torch path checks the inputs before merging and the output after
NONFINITE_METHODS = {"average": {}, "select": {"seed": 1}, "resample": {"seed": 1, "rounds": 2},
                     "task_arithmetic": {}, "ties": {"density": 0.5}, "dare_linear": {"seed": 1},
                     "dare_linear:l1": {"seed": 1, "rescale": "l1"}, "dare_ties": {"seed": 1},
                     "model_stock": {}, "ties_select": {"seed": 1}, "dare_resample": {"seed": 1}}


def torch_path_only(monkeypatch):
    monkeypatch.setattr(fused, "numba", None)
    monkeypatch.setattr(fused_tv, "numba", None)


@pytest.mark.parametrize("path", ["fused", "torch"])
def test_nan_or_inf_in_any_input_is_named_by_every_method(ckpts, tmp_path, monkeypatch, path):
    """A NaN, +Inf or -Inf in one sub-model or the base, in the last of several chunks: every
    method names the file, the tensor and the flat index, and writes nothing; a method
    that does not read the base merges a broken base's sub-models; --allow-nonfinite merges."""
    base, subs, base_t, _ = ckpts
    if path == "torch":
        torch_path_only(monkeypatch)
    at = 700  # of layers.1.w's 768 elements; chunks of 100
    broken = {}
    for holder, value in [("s1", float("nan")), ("s2", float("inf")), ("base", float("-inf"))]:
        source = base if holder == "base" else subs[int(holder[1])]
        ts = all_tensors(source)
        ts["layers.1.w"] = ts["layers.1.w"].clone()
        ts["layers.1.w"].view(-1)[at] = value
        broken[holder] = write_ckpt(tmp_path / f"broken-{holder}", ts)
    fused_used = set()
    for spec, kw in NONFINITE_METHODS.items():
        method = spec.split(":")[0]
        for holder, ckpt in broken.items():
            inputs = [ckpt if holder == f"s{i}" else s for i, s in enumerate(subs)]
            b = ckpt if holder == "base" else base
            out = tmp_path / f"{spec}-{holder}"
            if holder == "base" and not get(method).needs_base:
                merge(method, inputs, out, base=b, chunk_elements=100, **kw)  # not read
                continue
            with pytest.raises(MergeError, match=rf"tensor 'layers.1.w' in {ckpt}/model.safetensors "
                                                 rf"holds NaN or Inf \(first at flat index {at}\)"):
                merge(method, inputs, out, base=b, chunk_elements=100, **kw)
            assert not out.exists()
        recipe = merge(method, inputs, tmp_path / f"{spec}-allowed", base=b, chunk_elements=100,
                       allow_nonfinite=True, **kw)
        fused_used.add(recipe["fused_tensors"] > 0)
    assert fused_used == ({True, False} if path == "fused" else {False})


@pytest.mark.parametrize("path", ["fused", "torch"])
@pytest.mark.parametrize("method", ["average", "task_arithmetic"])
def test_finite_inputs_that_overflow_are_named_in_the_output(tmp_path, monkeypatch, path, method):
    """Two float32 sub-models of 3e38: their float32 sum (or their task vectors' sum) is Inf.
    Written silently before; now an error naming the merged element, not the inputs."""
    if path == "torch":
        torch_path_only(monkeypatch)
    big = torch.full((64,), 3.0e38, dtype=torch.float32)
    big[:5] = 1.0
    base = write_ckpt(tmp_path / "base", {"w": torch.zeros(64)})
    subs = [write_ckpt(tmp_path / f"b{i}", {"w": big}) for i in range(2)]
    with pytest.raises(MergeError, match=r"merging tensor 'w' gave NaN or Inf at flat index 5 "
                                         r"from finite inputs: the torch.float32 arithmetic overflowed"):
        merge(method, subs, tmp_path / "out", base=base)
    assert not (tmp_path / "out").exists()
    merge(method, subs, tmp_path / "allowed", base=base, allow_nonfinite=True)
    assert torch.isinf(all_tensors(tmp_path / "allowed")["w"][5:]).all()


def test_a_small_merge_takes_the_torch_path_with_the_same_bytes(tmp_path, monkeypatch):
    """Below engine.FUSED_MIN_ELEMENTS float elements per sub-model the torch path merges
    (no kernel to compile); the bytes are the fused kernels'."""
    from ordermerge.merge import engine
    from ordermerge.merge.engine import merge
    from test_taskvec import load, make
    base, subs = make(tmp_path, k=3, dtype=torch.bfloat16)
    fused = merge("average", subs, tmp_path / "fused")
    monkeypatch.setattr(engine, "FUSED_MIN_ELEMENTS", 1 << 22)  # the default
    small = merge("average", subs, tmp_path / "torch")
    assert fused["fused_tensors"] > 0 and small["fused_tensors"] == 0
    a, b = load(tmp_path / "fused"), load(tmp_path / "torch")
    assert all(torch.equal(a[n].view(torch.int16), b[n].view(torch.int16)) for n in a)
