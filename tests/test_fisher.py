"""Fisher merging: the diagonal Fisher (ordermerge/fisher_info.py) against autograd row by
row, and the merge (ordermerge/merge/fisher.py) against a float64 computation and at its
limits (equal Fisher: the average; one run's Fisher alone: that run; no Fisher: the
average), through the engine, the CLI and bad inputs."""
import json

import pytest
import torch
from safetensors.torch import save_file

from ordermerge.merge.engine import MergeError, merge
from ordermerge.merge.methods import METHODS, method_id, parse_method_id
from test_taskvec import SHAPES, load, make, write
from ulps import forward_error, gamma


def fisher_dir(path, tensors, sub, rows=32, row_ids=("t:0",)):
    """A Fisher directory as the diagonal_fisher rule writes it: the tensors and fisher.json
    naming the sub-model (fisher_info.run_meta)."""
    from ordermerge.provenance import file_hashes
    write(path, tensors)
    (path / "fisher.json").write_text(json.dumps({
        "model": str(sub), "rows": rows, "row_ids": list(row_ids),
        "model_sha256": file_hashes(sub, ["model.safetensors"])}))
    return path


def fishers(tmp_path, subs, seed=1, zero_frac=0.2, dtype=torch.float32, rows=32):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, sub in enumerate(subs):
        f = {n: (torch.rand(s, generator=g) ** 4 * 1e-3
                 * (torch.rand(s, generator=g) > zero_frac)).to(dtype) for n, s in SHAPES.items()}
        out.append(fisher_dir(tmp_path / f"f{i}", f, sub, rows))
    return out


def test_the_id_and_the_entry():
    assert method_id("fisher") == "fisher-n32" and method_id("fisher", rows=8) == "fisher-n8"
    assert parse_method_id("fisher-n64") == ("fisher", {"rows": 64})
    m = METHODS["fisher"]
    assert m.data == "diagonal_fisher" and not m.needs_base and m.min_models == 2 and m.label == "Fisher"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_merge_is_the_fisher_weighted_mean(tmp_path, dtype):
    _, subs = make(tmp_path, k=3, dtype=dtype, step=0.05, moved=0.8)
    fs = fishers(tmp_path, subs, rows=8)
    w = [0.5, 0.3, 0.2]
    merge("fisher", subs, tmp_path / "m", aux=fs, weights=w, rows=8)
    merge("fisher", subs, tmp_path / "c", aux=fs, weights=w, rows=8, chunk_elements=101)
    got, chunked = load(tmp_path / "m"), load(tmp_path / "c")
    thetas, F = [load(s) for s in subs], [load(f) for f in fs]
    fallbacks = 0
    for n in SHAPES:
        assert torch.equal(got[n].view(torch.uint8) if dtype == torch.bfloat16 else got[n],
                           chunked[n].view(torch.uint8) if dtype == torch.bfloat16 else chunked[n])
        num = sum(wi * f[n].double() * t[n].double() for wi, f, t in zip(w, F, thetas))
        den = sum(wi * f[n].double() for wi, f in zip(w, F))
        avg = sum(wi * t[n].double() for wi, t in zip(w, thetas))
        want = torch.where(den > 0, num / den.clamp(min=1e-300), avg)
        tol = torch.finfo(dtype).eps / 2 * want.abs() + 16 * torch.finfo(torch.float32).eps * (
            sum(t[n].double().abs() for t in thetas))
        assert ((got[n].double() - want).abs() <= tol).all(), n
        fallbacks += int((den == 0).sum())
    assert fallbacks > 0  # elements without Fisher took the average
    recipe = json.loads((tmp_path / "m" / "merge.json").read_text())
    assert recipe["diagonal_fisher"] == [str(f) for f in fs]


def test_the_limits(tmp_path):
    _, subs = make(tmp_path, k=3, dtype=torch.float32, step=0.05, moved=0.8)
    thetas = [load(s) for s in subs]
    ones = [fisher_dir(tmp_path / f"one{i}", {n: torch.full(s, 0.25) for n, s in SHAPES.items()},
                       subs[i]) for i in range(3)]
    merge("fisher", subs, tmp_path / "eq", aux=ones)
    merge("average", subs, tmp_path / "avg")
    eq, avg = load(tmp_path / "eq"), load(tmp_path / "avg")
    # equal Fisher: the average, up to float32 rounding: sum w F theta / sum w F against
    # sum theta / k, each within gamma(k + 2) of exact relative to the mean of |theta_i|
    # (was: rtol 4e-7 of the average)
    for n in SHAPES:
        scale = sum(t[n].abs() for t in thetas) / len(thetas)
        assert bool(((eq[n] - avg[n]).abs() <= 2 * gamma(len(thetas) + 2) * scale).all()), n
    # only run 1 has Fisher: run 1's values (within one float32 rounding of w F theta / w F)
    only = [fisher_dir(tmp_path / f"only{i}", {n: torch.full(s, 1e-5 if i == 1 else 0.0)
                                               for n, s in SHAPES.items()}, subs[i])
            for i in range(3)]
    merge("fisher", subs, tmp_path / "one", aux=only)
    for n, t in load(tmp_path / "one").items():
        # (w F theta) / (w F), the other terms exact zeros: two roundings (was: 2.4e-7)
        assert torch.allclose(t, thetas[1][n], rtol=gamma(2), atol=0), n
        assert not torch.allclose(t, avg[n], rtol=1e-3), n
    # no Fisher anywhere: the average, bytes
    zero = [fisher_dir(tmp_path / f"z{i}", {n: torch.zeros(s) for n, s in SHAPES.items()}, subs[i])
            for i in range(3)]
    merge("fisher", subs, tmp_path / "zero", aux=zero)
    for n, t in load(tmp_path / "zero").items():
        assert torch.equal(t, avg[n]), n


def test_bad_fisher_inputs_are_named(tmp_path):
    _, subs = make(tmp_path, k=2, dtype=torch.float32)
    fs = fishers(tmp_path, subs)
    with pytest.raises(MergeError, match=r"fisher needs --fisher with one file per sub-model \(2\), got 0"):
        merge("fisher", subs, tmp_path / "o")
    with pytest.raises(MergeError, match="got 1"):
        merge("fisher", subs, tmp_path / "o", aux=fs[:1])
    bad = fisher_dir(tmp_path / "bad", {n: torch.zeros(s) for n, s in SHAPES.items() if n != "norm"},
                     subs[1])
    with pytest.raises(MergeError, match=r"--fisher .*bad: no tensor 'norm'"):
        merge("fisher", subs, tmp_path / "o", aux=[fs[0], bad])
    half = fisher_dir(tmp_path / "half", {n: torch.zeros(s, dtype=torch.float16)
                                          for n, s in SHAPES.items()}, subs[0])
    with pytest.raises(MergeError, match=r"--fisher .*half: tensor .* F16, expected .* F32"):
        merge("fisher", subs, tmp_path / "o", aux=[half, fs[1]])
    with pytest.raises(MergeError, match="average reads no per-sub-model data"):
        merge("average", subs, tmp_path / "o", aux=fs)
    assert not (tmp_path / "o").exists()


def test_a_fisher_of_another_model_in_another_order_or_not_a_fisher_is_refused(tmp_path):
    """Fishers given in swapped order, the Fisher of another task's run, a Fisher over
    other rows, and one holding NaN or a negative value were all merged (exit 0): each is
    refused, naming the Fisher; nothing is written."""
    _, subs = make(tmp_path, k=2, dtype=torch.float32)
    fs = fishers(tmp_path, subs)
    merge("fisher", subs, tmp_path / "ok", aux=fs)  # as made: merged
    with pytest.raises(MergeError, match=r"--fisher .*f1 is the Fisher of sub-model 2 \(.*s1\), "
                                         r"given for sub-model 1 \(.*s0\): give the Fishers in"):
        merge("fisher", subs, tmp_path / "o", aux=fs[::-1])
    _, others = make(tmp_path / "other", k=2, dtype=torch.float32, seed=5)
    foreign = fishers(tmp_path / "other", others)
    with pytest.raises(MergeError, match=r"--fisher .*other/f0 was made from .*other/s0, whose "
                                         r"weights are not those of sub-model 1 \(.*/s0\)"):
        merge("fisher", subs, tmp_path / "o", aux=[foreign[0], fs[1]])
    with pytest.raises(MergeError, match=r"--fisher .*f0 is over 32 rows, but the method's rows "
                                         r"setting is 8"):
        merge("fisher", subs, tmp_path / "o", aux=fs, rows=8)
    ones = {n: torch.ones(s) for n, s in SHAPES.items()}
    elsewhere = fisher_dir(tmp_path / "elsewhere", ones, subs[1], row_ids=["t:1"])
    with pytest.raises(MergeError, match=r"--fisher .*elsewhere is over other rows than .*f0"):
        merge("fisher", subs, tmp_path / "o", aux=[fs[0], elsewhere])
    (tmp_path / "nometa").mkdir()
    with pytest.raises(MergeError, match=r"--fisher .*nometa/f: fisher.json missing \(model, "):
        merge("fisher", subs, tmp_path / "o", aux=[fs[0], write(tmp_path / "nometa" / "f", ones)])
    name = sorted(SHAPES)[-1]
    for value, shown in ((float("nan"), "nan"), (-0.5, "-0.5")):
        t = dict(ones)
        t[name] = torch.ones(SHAPES[name]).flatten().index_fill(0, torch.tensor([3]), value) \
            .view(SHAPES[name])
        d = fisher_dir(tmp_path / f"bad{shown}", t, subs[1])
        with pytest.raises(MergeError, match=rf"--fisher .*bad{shown}: tensor {name!r} holds "
                                             rf"{shown} at flat index 3: a diagonal Fisher is "
                                             "finite and non-negative"):
            merge("fisher", subs, tmp_path / "o", aux=[fs[0], d])
    assert not (tmp_path / "o").exists()


def test_the_command_line_merges_with_fisher(tmp_path, capsys):
    from ordermerge.cli import main
    _, subs = make(tmp_path, k=2, dtype=torch.float32)
    fs = fishers(tmp_path, subs, rows=4)
    assert main(["merge", "--method", "fisher", "--rows", "4", "--fisher", *map(str, fs),
                 "-o", str(tmp_path / "cli"), *map(str, subs)]) == 0
    assert json.loads(capsys.readouterr().out)["method_id"] == "fisher-n4"
    merge("fisher", subs, tmp_path / "api", aux=fs, rows=4)
    for n, t in load(tmp_path / "cli").items():
        assert torch.equal(t, load(tmp_path / "api")[n])


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny Llama and its tokenizer, saved, with toy GSM8K training rows."""
    from ordermerge.data.prepare import prepare
    from ordermerge.data.registry import get_task
    from ordermerge.models import build_tiny, train_tokenizer
    rows = prepare("gsm8k", {"source": "toy", "n_train": 8, "n_validation": 1, "n_test": 1},
                   seed=0, config_key="test")["train"]
    task = get_task("gsm8k")
    tok = train_tokenizer([task.prompt(r) + " " + task.target(r) for r in rows] * 4, 300)
    model = build_tiny({"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "max_position_embeddings": 256,
                        "tie_word_embeddings": False}, tok, seed=0)
    path = tmp_path_factory.mktemp("fisher") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, task, rows


def test_the_fisher_is_the_mean_squared_gradient_row_by_row(tiny_checkpoint):
    """Against autograd on each row alone: -log p(target | prompt) summed over the target
    tokens, differentiated, squared, averaged over the rows."""
    from ordermerge.fisher_info import fisher_of_checkpoint
    from ordermerge.models import load_model
    from ordermerge.train import IGNORE, encode_example
    path, task, rows = tiny_checkpoint
    got, ids = fisher_of_checkpoint(task, path, rows, 5, 128)
    assert ids == [r["id"] for r in rows[:5]]
    model, tok = load_model(path, torch.float32)
    params = dict(model.named_parameters())
    want = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for r in rows[:5]:
        e = encode_example(task.prompt(r), task.target(r), tok, 128)
        ids_t, labels = torch.tensor([e["input_ids"]]), torch.tensor(e["labels"])
        logp = torch.log_softmax(model(input_ids=ids_t).logits[0].double(), -1)
        # position t predicts token t + 1; the prompt's tokens carry no loss
        keep = labels[1:] != IGNORE
        ll = logp[:-1][keep].gather(1, labels[1:][keep].unsqueeze(1)).sum()
        grads = torch.autograd.grad(ll, list(params.values()), allow_unused=True)
        for (n, _), g in zip(params.items(), grads):
            if g is not None:
                want[n] += g.double() ** 2
    assert set(got) == set(params)
    # the same float32 model and rows: the two gradients differ by the loss head's and the
    # kernels' reduction orders, forward_error (tests/ulps.py) relative, twice for the square
    # and twice for the two sides; atol for elements whose terms cancel (was: rtol 1e-4)
    rtol = 4 * forward_error(model.config.to_dict(), 128)
    for n in params:
        w = want[n] / 5
        assert torch.allclose(got[n].double(), w, rtol=rtol, atol=1e-12 * float(w.abs().max())), n
    assert sum(float(t.sum()) for t in got.values()) > 0


def test_more_rows_than_the_split_is_an_error(tiny_checkpoint):
    from ordermerge.fisher_info import fisher_of_checkpoint
    from ordermerge.utils import InputError
    path, task, rows = tiny_checkpoint
    with pytest.raises(InputError, match="9 rows asked for .* the training split has 8"):
        fisher_of_checkpoint(task, path, rows, 9, 128)


def test_a_tensor_that_is_no_parameter_gets_zeros(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from ordermerge.fisher_info import fisher_of_checkpoint
    path, task, rows = tiny_checkpoint
    import shutil
    ckpt = tmp_path / "extra"
    shutil.copytree(path, ckpt)
    sd = load_file(str(ckpt / "model.safetensors"))
    sd["extra.buffer"] = torch.ones(3)
    save_file(sd, str(ckpt / "model.safetensors"))
    got, _ = fisher_of_checkpoint(task, ckpt, rows, 2, 128)
    assert torch.equal(got["extra.buffer"], torch.zeros(3))
