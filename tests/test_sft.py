"""SFT runs: the exact order, per-sample logs, checkpoints, resume after SIGKILL, 2 processes."""
import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from ordermerge.data.orders import make_order
from ordermerge.data.prepare import prepare
from ordermerge.models import build_tiny, save_model, train_tokenizer
from ordermerge.sft import train_from_args
from ordermerge.sft import Resume, TrainError, checkpoint_points, plan_steps
from ordermerge.train import micro_batches
from ordermerge.utils import write_jsonl
from ulps import probable, steps_apart, ulp
from workflow_helpers import made_once

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "sft.py"
PARAMS = {"lr": 1e-3, "batch_size": 8, "micro_batch_size": 3, "max_length": 96,
          "warmup_ratio": 0.1, "save_steps": [4], "eval_steps": [3]}
STEP_TOKENS = PARAMS["batch_size"] * PARAMS["max_length"]  # the terms of one step's sums


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _make_setup(root: Path) -> None:
    """A tiny bf16 base, toy GSM8K-format rows, and a shuffle order (3 epochs)."""
    rows = prepare("gsm8k", {"source": "toy", "n_train": 60, "n_validation": 8, "n_test": 4},
                   seed=0, config_key="tasks.gsm8k.data")
    data = root / "data"
    data.mkdir(parents=True)
    for split in ("train", "validation"):
        write_jsonl(data / f"{split}.jsonl", rows[split])
    texts = [r["question"] + " " + r["answer"] for r in rows["train"]]
    tok = train_tokenizer(texts, vocab_size=300)
    arch = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 128, "tie_word_embeddings": False}
    model = build_tiny(arch, tok, seed=0)
    base = root / "base"
    base.mkdir()
    save_model(model, tok, base, torch.bfloat16)
    ids = [r["id"] for r in rows["train"]]
    order = {"seed": 0, "run": 1, "epochs": make_order(ids, scheme="shuffle", run=1, epochs=3,
                                                       seed=0, task="gsm8k")}
    (root / "order.json").write_text(json.dumps(order))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """_make_setup's files, once per test session (the SFT, FSDP and analysis modules read
    them): (root, base, data, order file, order)."""
    root = made_once(tmp_path_factory, "sft-setup", _make_setup)
    order = json.loads((root / "order.json").read_text())
    return root, root / "base", root / "data", root / "order.json", order


def args_for(setup, out: Path) -> Namespace:
    root, base, data, order_file, _ = setup
    return Namespace(task="gsm8k", base=str(base), data_dir=data, order=order_file, out_dir=out)


def script_cmd(setup, out: Path) -> list[str]:
    root, base, data, order_file, _ = setup
    return ["--task", "gsm8k", "--base", str(base), "--data-dir", str(data), "--order",
            str(order_file), "--out-dir", str(out), "--params", json.dumps(PARAMS)]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def read_steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


def weight_drift(run: Path, tokens_per_step: int) -> float:
    """delta of tests/test_fsdp_cpu.py's docstring: how far two runs' float32 master weights
    can drift apart when they reduce each step's gradient in another order."""
    return 8 * probable(tokens_per_step) * sum(s["lr"] for s in read_steps(run))


def compare_checkpoints(a: Path, b: Path, delta: float) -> dict:
    """Against the tolerance of tests/test_fsdp_cpu.py's docstring: the elements farther
    apart than delta + one bf16 step (`beyond`, with the first one), the elements that differ
    at all, and the bound on how many may (tied tensors are stored once in both)."""
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sorted(x) == sorted(y), a
    seen = {"beyond": 0, "first_beyond": None, "differ": 0, "share_bound": 0.0, "total": 0}
    for k in x:
        assert x[k].dtype == y[k].dtype == torch.bfloat16, k
        apart = (x[k].double() - y[k].double()).abs()
        far = apart > delta + ulp(torch.maximum(x[k].abs(), y[k].abs()))
        if far.any() and seen["first_beyond"] is None:
            i = int(far.flatten().nonzero()[0])
            seen["first_beyond"] = (k, i, float(x[k].flatten()[i]), float(y[k].flatten()[i]),
                                    f"{int(steps_apart(x[k], y[k]).flatten()[i])} bf16 steps apart")
        seen["beyond"] += int(far.sum())
        seen["differ"] += int((x[k] != y[k]).sum())
        seen["share_bound"] += float((2 * delta / ulp(x[k])).clamp(max=1).sum())
        seen["total"] += x[k].numel()
    return seen


def assert_close_checkpoints(a: Path, b: Path, delta: float) -> None:
    seen = compare_checkpoints(a, b, delta)
    assert seen["beyond"] == 0, (a, seen)
    assert seen["differ"] <= seen["share_bound"], (a, seen)
    print(f"{a.name}: {seen['differ']} of {seen['total']} bf16 elements differ "
          f"(bound {seen['share_bound']:.0f}; delta {delta:.2e})")


def assert_same_training(one: Path, two: Path, tokens_per_step: int) -> dict:
    """The same rows, rates and (to the tolerance) losses per step and validation losses."""
    a, b = read_steps(one), read_steps(two)
    assert [(s["step"], s["ids"], s["lr"]) for s in a] == [(s["step"], s["ids"], s["lr"]) for s in b]
    rel = 2 * probable(tokens_per_step)  # tests/test_fsdp_cpu.py's docstring
    assert [s["loss"] for s in b] == pytest.approx([s["loss"] for s in a], rel=rel)
    ref, run = (json.loads((d / "run.json").read_text()) for d in (one, two))
    assert [h["validation_loss"] for h in run["history"]] == pytest.approx(
        [h["validation_loss"] for h in ref["history"]], rel=rel)
    assert run["checkpoints"] == ref["checkpoints"] and run["processes"] == 2
    delta = weight_drift(one, tokens_per_step)
    for names in ref["checkpoints"].values():
        for name in names:
            assert_close_checkpoints(one / name, two / name, delta)
    return run


@pytest.fixture(scope="module")
def single(setup, tmp_path_factory):
    """One uninterrupted run in a fresh process (the reference for resume and 2 processes);
    once per test session, as `setup`."""
    def run(out):
        subprocess.run([sys.executable, str(SCRIPT), *script_cmd(setup, out)], check=True,
                       env=env(), capture_output=True)
    return made_once(tmp_path_factory, "sft-single", run)


def test_every_optimizer_step_trains_on_the_rows_the_order_gives(setup, single):
    *_, order = setup
    want = [ids[b:b + 8] for ids in order["epochs"] for b in range(0, len(ids), 8)]
    steps = read_steps(single)
    assert [s["ids"] for s in steps] == want  # 60 rows: 7 full batches and one of 4 per epoch
    assert [s["step"] for s in steps] == list(range(1, 25))
    assert [s["epoch"] for s in steps] == [e for e in (1, 2, 3) for _ in range(8)]
    # warm-up then cosine decay: the rate rises for the first steps, then falls
    lrs = [s["lr"] for s in steps]
    assert lrs[0] < lrs[2] and lrs[-1] < lrs[10]


def test_per_sample_log_positions_and_losses_seen(setup, single):
    *_, order = setup
    with open(single / "samples.csv") as fh:
        rows = list(csv.DictReader(fh))
    # the loss after training is the score rule's (no closing pass in the SFT job)
    assert list(rows[0]) == ["id", "epoch", "position", "step", "loss_seen"]
    assert len(rows) == 3 * 60
    for e in (1, 2, 3):
        mine = [r for r in rows if r["epoch"] == str(e)]
        assert sorted(int(r["position"]) for r in mine) == list(range(60))  # a permutation
        assert [r["id"] for r in sorted(mine, key=lambda r: int(r["position"]))] == order["epochs"][e - 1]
    assert all(float(r["loss_seen"]) > 0 for r in rows)
    # training lowered the loss: seen in epoch 3 vs seen in epoch 1
    seen = {e: sum(float(r["loss_seen"]) for r in rows if r["epoch"] == str(e)) for e in (1, 3)}
    assert seen[3] < seen[1]


def test_checkpoints_run_record_and_validation_steps(setup, single):
    from transformers import AutoModelForCausalLM
    run = json.loads((single / "run.json").read_text())
    assert run["steps"] == 24 and run["processes"] == 1 and run["mixed_precision"] == "no"
    assert run["checkpoints"] == {"4": ["steps/step4"], "8": ["epoch1"], "16": ["epoch2"], "24": ["epoch3"]}
    assert [h["step"] for h in run["history"]] == [3, 8, 16, 24]
    assert 0 < run["real_tokens"] < run["processed_tokens"] and run["tokens_per_s"] > 0
    assert run["padding_efficiency"] == pytest.approx(run["real_tokens"] / run["processed_tokens"])
    assert run["micro_batch_tokens"] is None
    assert run["resumed_from_steps"] == []
    assert not (single / "resume").exists()  # a finished run leaves no state behind
    for name in ("steps/step4", "epoch1", "epoch2", "epoch3"):
        m = AutoModelForCausalLM.from_pretrained(single / name, dtype="auto")
        assert m.dtype == torch.bfloat16
        assert (single / name / "provenance.json").is_file()
    a = AutoModelForCausalLM.from_pretrained(single / "epoch1").state_dict()
    b = AutoModelForCausalLM.from_pretrained(single / "epoch3").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def kill_and_resume(cmd: list[str], out: Path) -> int:
    """Run the SFT script with `cmd` (its run into `out`), SIGKILL it once its first
    epoch-end state is written (after step 8, epoch 1), remove what the run wrote but its
    resume state (as Snakemake deletes a failed job's outputs before it runs it again), and
    run it again to the end; returns the step it resumed from."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *cmd], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "resume" / "latest"
    deadline = time.time() + 300
    while not (latest.is_file() and latest.read_text().strip() >= "state-00000008"):
        assert proc.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    resumed_at = int(latest.read_text().strip().split("-")[1])
    for p in out.iterdir():
        if p.name != "resume":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    subprocess.run([sys.executable, str(SCRIPT), *cmd], check=True, env=env(), capture_output=True)
    return resumed_at


def test_resume_after_sigkill_gives_the_bytes_of_an_uninterrupted_run(setup, single, tmp_path):
    out = tmp_path / "run"
    resumed_at = kill_and_resume(script_cmd(setup, out), out)
    assert 8 <= resumed_at < 24
    run = json.loads((out / "run.json").read_text())
    assert run["resumed_from_steps"] == [resumed_at]
    for name in ("steps/step4", "epoch1", "epoch2", "epoch3"):
        assert sha(out / name / "model.safetensors") == sha(single / name / "model.safetensors"), name
    assert read_steps(out) == read_steps(single)
    with open(out / "samples.csv") as a, open(single / "samples.csv") as b:
        assert a.read() == b.read()


def test_two_processes_train_on_the_same_rows_per_step(setup, single, tmp_path):
    """accelerate launch with 2 CPU processes (gloo, DDP): each step's rows are the same as
    with one process, split between the two; the losses (per step, and validation on the
    gathered shares of the rows) and the bf16 checkpoints agree up to reduction order, with
    the tolerances of tests/test_fsdp_cpu.py (was: validation losses within 5%)."""
    from transformers import AutoModelForCausalLM
    out = tmp_path / "run"
    cmd = [*launch(2), str(SCRIPT), *script_cmd(setup, out)]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_training(single, out, STEP_TOKENS)
    m = AutoModelForCausalLM.from_pretrained(out / "epoch3", dtype="auto")
    assert m.dtype == torch.bfloat16


TOKENS = 200  # train.micro_batch_tokens of the length-aware tests (max_length 96)


def launch(processes: int) -> list[str]:
    """The command prefix that runs a script in `processes` CPU processes."""
    if processes == 1:
        return [sys.executable]
    from workflow_helpers import free_port  # seen once in CI, 2026-12-07: a rank left alone
    port = free_port()
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            str(processes), "--num_machines", "1", "--main_process_port", str(port),
            "--mixed_precision", "no", "--dynamo_backend", "no"]


@pytest.mark.parametrize("processes", [1, 2])
def test_the_length_aware_cut_gives_each_step_the_plain_cuts_loss_and_gradient(setup, tmp_path,
                                                                               processes):
    """From the same weights, each step's rows, loss and gradient under micro_batch_tokens
    equal the plain cut's (float tolerance), with fewer padded tokens processed."""
    root, base, data, order_file, _ = setup
    out = tmp_path / "steps.json"
    cmd = [*launch(processes), str(ROOT / "tests" / "step_equality.py"), "--base", str(base),
           "--data-dir", str(data), "--order", str(order_file), "--work-dir", str(tmp_path / "w"),
           "--out", str(out), "--params", json.dumps(PARAMS), "--tokens", str(TOKENS),
           "--steps", "4"]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["processes"] == processes and len(got["steps"]) == 4
    # the two cuts sum the same token terms (at most batch_size x max_length of them) in other
    # groupings: each side is within probable(n) of exact, relative to the magnitudes summed.
    # Losses are sums of positive terms; a gradient's largest elements are of the order of
    # their terms' magnitudes (the tokens of one step push them one way). (Was: 1e-5 both.)
    tol = 2 * probable(STEP_TOKENS)  # 2.0e-5
    for s in got["steps"]:
        assert s["ids_plain"] == s["ids_tokens"] == s["order_ids"], s["step"]
        assert s["loss"][1] == pytest.approx(s["loss"][0], rel=tol), s["step"]
        assert s["grad_rel_diff"] < tol, s
        assert s["grad_norm"][0] > 0 and s["real_plain"] == s["real_tokens"]
    processed = [sum(s[f"processed_{n}"] for s in got["steps"]) for n in ("plain", "tokens")]
    assert processed[1] < processed[0]


def test_a_length_aware_run_logs_the_same_rows_as_the_plain_run(setup, single, tmp_path):
    """steps.jsonl and samples.csv: the same rows, steps and positions; losses to float
    tolerance; run.json reports the budget and a higher padding efficiency."""
    out = tmp_path / "run"
    cmd = script_cmd(setup, out)
    cmd[-1] = json.dumps({**PARAMS, "micro_batch_tokens": TOKENS})
    subprocess.run([sys.executable, str(SCRIPT), *cmd], check=True, env=env(), capture_output=True)
    a, b = read_steps(out), read_steps(single)
    assert [(s["step"], s["epoch"], s["ids"], s["lr"]) for s in a] == \
        [(s["step"], s["epoch"], s["ids"], s["lr"]) for s in b]
    assert [s["loss"] for s in a] == pytest.approx([s["loss"] for s in b], rel=1e-3)
    with open(out / "samples.csv") as fa, open(single / "samples.csv") as fb:
        ra, rb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    key = ("id", "epoch", "position", "step")
    assert [tuple(r[k] for k in key) for r in ra] == [tuple(r[k] for k in key) for r in rb]
    run, ref = (json.loads((d / "run.json").read_text()) for d in (out, single))
    assert run["micro_batch_tokens"] == TOKENS and run["real_tokens"] == ref["real_tokens"]
    assert run["padding_efficiency"] > ref["padding_efficiency"]


def test_micro_batches_plain_and_by_token_budget():
    lengths = [10, 50, 20, 50, 5, 30, 40]
    assert micro_batches(lengths, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    cut = micro_batches(lengths, 3, tokens=100)
    # longest first (ties in data order), each padded micro-batch within 100 tokens
    assert cut == [[1, 3], [6, 5], [2, 0, 4]]
    assert all(len(c) * lengths[c[0]] <= 100 for c in cut)
    assert sorted(j for c in cut for j in c) == list(range(7))
    assert micro_batches([120, 10], 2, tokens=100) == [[0], [1]]  # too long for the budget: alone
    assert micro_batches([], 4, tokens=100) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=40), st.integers(1, 8),
       st.integers(300, 2000))
def test_the_length_aware_cut_never_pads_more_than_the_plain_cut(lengths, size, tokens):
    def padded(cut):
        return sum(len(c) * max(lengths[j] for j in c) for c in cut)
    plain, aware = micro_batches(lengths, size), micro_batches(lengths, size, tokens)
    assert sorted(j for c in aware for j in c) == list(range(len(lengths)))  # each row once
    assert all(len(c) * max(lengths[j] for j in c) <= tokens for c in aware)
    if size * max(lengths) <= tokens:  # the plain cut fits the budget too (paper.yaml's N):
        assert len(aware) <= len(plain)  # no more forward passes
        assert padded(aware) <= padded(plain)  # and no more padding


def test_a_budget_below_the_plain_cuts_bound_may_pad_more_than_it():
    """Found by the property test: 7 x 263 > 1078, so the plain cut breaks the budget the
    length-aware cut keeps, and its one run of 7 pads less than two runs of 4."""
    lengths = [84, 212, 235, 223, 114, 234, 263, 42]
    cut = micro_batches(lengths, 7, tokens=1078)
    assert cut == [[6, 2, 5, 3], [1, 4, 0, 7]]
    assert sum(len(c) * max(lengths[j] for j in c) for c in cut) == 4 * 263 + 4 * 212


def test_plan_and_checkpoint_points():
    order = [[f"r{i}" for i in range(10)]] * 2
    steps = plan_steps(order, 4)
    assert [len(s.ids) for s in steps] == [4, 4, 2, 4, 4, 2]
    assert [s.start for s in steps] == [0, 4, 8, 0, 4, 8]
    assert checkpoint_points(steps, [3, 5]) == {3: ["epoch1", "steps/step3"], 5: ["steps/step5"],
                                              6: ["epoch2"]}
    with pytest.raises(TrainError, match=r"train.save_steps: \[7\] outside 1..6"):
        checkpoint_points(steps, [7])


def test_a_partial_or_foreign_state_is_not_resumed(tmp_path):
    r = Resume(tmp_path, "fp-a")
    assert r.latest() is None
    state = r.root / "state-00000004"
    state.mkdir(parents=True)
    (r.root / "latest").write_text("state-00000004\n")
    assert r.latest() is None  # no progress.json: the save did not finish
    (state / "progress.json").write_text(json.dumps({"fingerprint": "fp-b", "steps_done": 4}))
    assert r.latest() is None  # other inputs
    (state / "progress.json").write_text(json.dumps({"fingerprint": "fp-a", "steps_done": 4}))
    assert r.latest() == state


def test_bad_train_input_is_named(setup, tmp_path):
    with pytest.raises(TrainError, match="train parameter 'lrr' is unknown"):
        train_from_args(args_for(setup, tmp_path / "o"), {"lrr": 1}, "t", print)
    bad = tmp_path / "order.json"
    bad.write_text(json.dumps({"epochs": [["gsm8k:train:999999"]]}))
    a = args_for(setup, tmp_path / "o")
    a.order = bad
    with pytest.raises(TrainError, match="absent from the training rows"):
        train_from_args(a, {}, "t", print)
    bad.write_text("[1, 2]")
    with pytest.raises(TrainError, match="not an order file"):
        train_from_args(a, {}, "t", print)


def test_defaults_are_the_schemas():
    from ordermerge.schema import train_defaults
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    props = schema["$defs"]["train"]["properties"]
    defaults = train_defaults()
    assert defaults == {k: v.get("default") for k, v in props.items()}
    assert defaults["lr"] == 2.0e-5 and defaults["micro_batch_tokens"] is None
    defaults["save_steps"].append(3)  # a copy: the next caller gets the schema's again
    assert train_defaults()["save_steps"] == []


def test_ordermerge_train_command(setup, single, tmp_path, capsys, monkeypatch):
    from ordermerge.cli import main
    root, base, data, order_file, _ = setup
    params = tmp_path / "train.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    out = tmp_path / "run"
    common = ["train", "--task", "gsm8k", "--data-dir", str(data), "--order", str(order_file),
              "--out-dir", str(out)]
    assert main([*common, "--base", str(base), "--params-file", str(params)]) == 0
    assert read_steps(out) == read_steps(single)
    # the same bytes as the workflow's script (same threads and determinism)
    assert sha(out / "epoch3" / "model.safetensors") == sha(single / "epoch3" / "model.safetensors")
    # a hub id offline fails at once, naming what to set: the hub is probed once and found
    # unreachable, and nothing waits on the network (the hub client's own retries take ~23 s;
    # only its cache lookup, local_files_only, may run) -- whatever the machine's speed
    import huggingface_hub

    import ordermerge.utils
    probes, downloads = [], []
    real_probe, real_download = ordermerge.utils.hub_reachable, huggingface_hub.snapshot_download
    monkeypatch.setattr(ordermerge.utils, "hub_reachable",
                        lambda *a, **k: probes.append(real_probe(*a, **k)) or probes[-1])
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: downloads.append(k.get("local_files_only", False))
                        or real_download(*a, **k))
    assert main([*common, "--base", "meta-llama/Llama-2-7b-hf"]) == 1
    assert probes == [False] and all(downloads)
    assert "set base to the local copy" in capsys.readouterr().err
