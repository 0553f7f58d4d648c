"""The vllm generation backend against the transformers one, on real models and real data.

Two checkpoints (SmolLM2-135M-Instruct from its GGUF, and the tiny suite's base, built and
pretrained by the workflow) generate greedily for test problems of the real GSM8K
(tests/data/gsm8k-slice, MIT, read by the real loader; SmolLM2 the first 32, the tiny base
those of the first 100 that fit its context) through both backends, on the CPU in float32.
Asserted: every completion that differs meets a near tie where it first differs, in the
logits of transformers' own greedy pass and in those of an unpadded forward pass of the
common prefix, so no more completions differ than meet a near tie on transformers' path (the
counts and the gaps are printed); the scores differ only by completions that differ.

A near tie is a gap between two logits below `near_tie(config)` of the step's largest logit
magnitude, from the arithmetic (tests/ulps.py), not from one CPU: the two backends compute
the same float32 forward with other kernels, that is, with each reduction (over the hidden,
intermediate and key dimensions, n at most) in another order. Each of the 2 L sublayers and
the head adds at most `probable(n)` relative to the residual stream's magnitude, so each
backend's logits are within `forward_error` = (2 L + 1) probable(n) of exact; the two
backends' are within twice that, and a gap between two logits moves by twice that again. SmolLM2-135M (30 layers, n =
1536): 3.4e-3 of the largest logit. (The old bound, 0.05 in logit units and "at least 95% of
the completions the same", was read off an AMD EPYC where none differed.) Then the evaluate script end to end with the vllm backend: one worker for two
checkpoints (the second reloads its weights into the running engine), the same records as
the transformers backend but for the `generation` field, which names vLLM and its version.

vLLM runs in its own environment (docs/vllm.md): $ORDERMERGE_VLLM_PYTHON, or
this Python if it has vllm. Without either the vLLM tests skip; with
ORDERMERGE_REQUIRE_VLLM=1 (.ci/run) they fail. The tests of errors and of the config check
need no vLLM.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from ulps import near_tie

from test_smollm2 import checkpoint  # noqa: F401  (SmolLM2-135M-Instruct, converted from its GGUF)
from workflow_helpers import ROOT, copy_project, snakemake, tiny_base as made_tiny_base

SLICE = ROOT / "tests" / "data" / "gsm8k-slice"
STOP = ["\nQuestion:"]
SETTINGS = {"gpu_memory_utilization": 0.9, "cpu_memory_utilization": 0.1, "enforce_eager": True,
            "max_num_seqs": 256, "max_model_len": None}


def _python() -> str:
    from ordermerge.evaluate.vllm_backend import VLLMError, worker_python
    try:
        return worker_python()
    except VLLMError as e:
        if os.environ.get("ORDERMERGE_REQUIRE_VLLM"):
            raise
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def vllm_python():
    """The vLLM environment's Python (skips or fails first, before any model is built)."""
    return _python()


@pytest.fixture(scope="module")
def session(vllm_python):
    from ordermerge.evaluate.vllm_backend import VLLMSession
    with VLLMSession(threads=2, python=vllm_python) as s:
        yield s


@pytest.fixture(scope="module")
def rows():
    from ordermerge.data.prepare import prepare
    cfg = {"source": "hf", "path": str(SLICE), "n_validation": 1, "n_train": None, "n_test": None}
    return prepare("gsm8k", cfg, 0, "tasks.gsm8k.data")["test"]


# SmolLM2's prompts: one transformers batch (32) of 96 new tokens, 3,072 greedy choices. A
# backend that computes another function (weights, tokenization, masks, positions) differs
# at choices that are no near tie, on most prompts; the check below does not need a share of
# prompts the same, so more prompts would add cost (100 were 2/3 of the module's CPU), not
# power
SMOLLM2_PROMPTS = 32


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """The tiny suite's base, pretrained 60 steps by the workflow (shared with test_general)."""
    return made_tiny_base(tmp_path_factory)


class Given:
    """A generator that returns completions computed beforehand (to score them)."""

    def __init__(self, texts, info):
        self.texts, self._info = texts, info

    def __call__(self, prompts, *, max_new_tokens, stop):
        assert len(prompts) == len(self.texts)
        return self.texts

    def info(self):
        return self._info


def first_gap(model, prompt_ids, a, b) -> tuple[int, float]:
    """Where completions a and b (token ids) first differ, and the gap between their tokens'
    logits there relative to the largest logit, from an unpadded forward pass over the
    prompt and their common prefix."""
    j = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + a[:j]])).logits[0, -1].float()
    return j, abs(float(logits[a[j]] - logits[b[j]])) / float(logits.abs().max())


def compare(path, rows, session, max_new_tokens, limit_prompt=None):
    from ordermerge.data.registry import get_task
    from ordermerge.evaluate.generate import (completion_text, encode_prompts, generation_info,
                                              greedy_ids)
    from ordermerge.evaluate.run import evaluate_rows
    from ordermerge.models import load_model
    task = get_task("gsm8k")
    model, tok = load_model(path, torch.float32)
    prompts = [task.prompt(r) for r in rows]
    encoded = encode_prompts(tok, prompts)
    if limit_prompt:  # within the model's context (vLLM refuses longer ones; see below)
        keep = [i for i, e in enumerate(encoded) if len(e) + max_new_tokens <= limit_prompt]
        rows, prompts, encoded = [rows[i] for i in keep], [prompts[i] for i in keep], \
            [encoded[i] for i in keep]
    torch.set_num_threads(2)
    margins = []
    hf_ids = greedy_ids(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=32,
                        margins=margins)
    hf = [completion_text(tok, ids, STOP) for ids in hf_ids]
    vl = session.generate(path, tok, prompts, max_new_tokens=max_new_tokens, stop=STOP,
                          settings=SETTINGS)
    vl_ids = session.last["outputs"]
    eos = tok.eos_token_id
    tie = near_tie(model.config.to_dict(), max(map(len, encoded)) + max_new_tokens)
    # the completions that meet a near tie on transformers' greedy path, before they end
    near = meet_near_tie(margins, hf_ids, eos, tie)
    differ = [i for i in range(len(rows)) if hf[i] != vl[i]]
    firsts = {i: first_gap(model, encoded[i], _until(hf_ids[i], eos), _until(vl_ids[i], eos))
              for i in differ}
    ties = {i: (g, margins[i][j]) for i, (j, g) in firsts.items()}
    scores = [evaluate_rows(None, tok, task, rows, max_new_tokens=max_new_tokens, batch_size=32,
                            generator=Given(texts, generation_info(b)))
              for texts, b in ((hf, "hf"), (vl, "vllm"))]
    print(f"{path.name}: {len(rows)} prompts, {len(rows) - len(differ)} the same; "
          f"{len(near)} meet a near tie (< {tie:.1e} of the largest logit) on transformers' "
          f"path; relative gaps at first differences {sorted(ties.values())}; accuracy "
          f"hf {scores[0]['score']:.3f} vllm {scores[1]['score']:.3f}")
    return rows, differ, ties, near, tie, scores, vl_ids


def meet_near_tie(margins, ids, eos, tie) -> set[int]:
    """The prompts whose greedy path (ids, margins from greedy_ids) meets a choice nearer a
    tie than `tie` before its end of sequence."""
    return {i for i, (m, x) in enumerate(zip(margins, ids)) if min(m[:len(_until(x, eos))]) < tie}


def _until(ids, eos):
    ids = list(ids)
    return ids[:ids.index(eos) + 1] if eos in ids else ids


def _assert_agree(differ, ties, near, tie, scores):
    # every difference starts at a near tie, both in the batched greedy pass and unpadded
    assert all(g < tie and m < tie for g, m in ties.values()), (tie, ties)
    assert set(differ) <= near, (sorted(differ), sorted(near))
    # the scores read each backend's own completions: they differ only where those do
    correct = [[e["correct"] for e in s["examples"]] for s in scores]
    assert all(a == b for i, (a, b) in enumerate(zip(*correct)) if i not in differ), correct
    assert scores[0]["generation"]["backend"] == "hf"
    assert scores[1]["generation"]["backend"] == "vllm"


def test_smollm2_generates_the_same_greedy_answers_through_vllm(session, checkpoint, rows):  # noqa: F811
    rows_, differ, ties, near, tie, scores, vl_ids = compare(checkpoint, rows[:SMOLLM2_PROMPTS],
                                                             session, max_new_tokens=96)
    assert len(rows_) == SMOLLM2_PROMPTS
    _assert_agree(differ, ties, near, tie, scores)
    # real answers: the model writes numbers, and some generations stop at EOS before the limit
    assert sum(len(v) < 96 for v in vl_ids) >= 1
    assert scores[1]["score"] > 0


def test_the_tiny_base_generates_the_same_greedy_answers_through_vllm(session, tiny_base, rows):
    ctx = json.loads((tiny_base / "config.json").read_text())["max_position_embeddings"]
    rows_, differ, ties, near, tie, scores, _ = compare(tiny_base, rows, session,
                                                        max_new_tokens=40, limit_prompt=ctx)
    assert len(rows_) >= 50, f"only {len(rows_)} GSM8K prompts fit the tiny base's {ctx} tokens"
    _assert_agree(differ, ties, near, tie, scores)


def test_a_lora_run_generates_the_same_greedy_answers_through_both_backends(session, tiny_base,
                                                                           rows, tmp_path):
    """A LoRA run is evaluated as its update folded into the base (lora_runs.folded), by
    transformers and by vLLM alike: the folded model agrees across the backends as any
    checkpoint does, and the evaluation of the adapter generates what the folded model does."""
    from safetensors.torch import load_file
    from test_lora_merge import random_adapter

    from ordermerge.data.registry import get_task
    from ordermerge.evaluate.run import evaluate_model
    from ordermerge.merge.lora_runs import folded
    adapter = random_adapter(tiny_base, tmp_path / "adapter", seed=5, std=0.1)
    ctx = json.loads((tiny_base / "config.json").read_text())["max_position_embeddings"]
    with folded(adapter) as dense:
        w, w0 = load_file(dense / "model.safetensors"), load_file(tiny_base / "model.safetensors")
        q = "model.layers.0.self_attn.q_proj.weight"
        assert not torch.equal(w[q], w0[q])  # the update moved the bfloat16 weights
        assert torch.equal(w["model.embed_tokens.weight"], w0["model.embed_tokens.weight"])
        rows_, differ, ties, near, tie, scores, _ = compare(dense, rows, session,
                                                            max_new_tokens=40, limit_prompt=ctx)
    _assert_agree(differ, ties, near, tie, scores)
    cfg = {"kind": "sft", "epoch": 1, "scheme": "shuffle", "model": "tiny", "name": "run0",
           "max_new_tokens": 40, "batch_size": 32, "backend": "hf"}
    rec = evaluate_model(get_task("gsm8k"), adapter, rows_, cfg)
    hf = [e["output"] for e in scores[0]["examples"]]
    assert [e["output"] for e in rec["examples"]] == hf
    assert rec["model_path"] == str(adapter)


def test_a_prompt_beyond_the_context_is_refused_naming_its_row(session, tiny_base, rows):
    from transformers import AutoTokenizer

    from ordermerge.data.registry import get_task
    from ordermerge.evaluate.vllm_backend import VLLMError
    task, tok = get_task("gsm8k"), AutoTokenizer.from_pretrained(tiny_base)
    longest = max(rows, key=lambda r: len(tok(task.prompt(r))["input_ids"]))
    with pytest.raises(VLLMError, match=f"row {longest['id']}.*exceeds the model's context"):
        session.generate(tiny_base, tok, [task.prompt(longest)], max_new_tokens=256, stop=STOP,
                         settings=SETTINGS, ids=[longest["id"]])


def test_the_evaluate_script_reuses_one_engine_and_names_the_backend(vllm_python, tiny_base, rows,
                                                                    tmp_path):
    """scripts/evaluate.py with two checkpoints (the base and a perturbed copy), once per
    backend: the records agree but for `generation`, and the second checkpoint's weights
    were reloaded into the first one's engine."""
    from ordermerge.models import load_model
    from ordermerge.data.registry import get_task
    from ordermerge.utils import write_jsonl
    ctx = json.loads((tiny_base / "config.json").read_text())["max_position_embeddings"]
    model, tok = load_model(tiny_base, torch.float32)
    task = get_task("gsm8k")
    fits = [r for r in rows if len(tok(task.prompt(r))["input_ids"]) + 41 <= ctx][:40]
    test = tmp_path / "test.jsonl"
    write_jsonl(test, fits)
    other = tmp_path / "other"
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.02)
    model.save_pretrained(other)
    tok.save_pretrained(other)
    records = {}
    for backend in ("hf", "vllm"):
        params = {"max_new_tokens": 40, "batch_size": 16, "choice_scoring": "loglik",
                  "kind": "sft", "epoch": 1, "scheme": "shuffle", "model": "tiny-llama",
                  "max_length": 128, "backend": backend, "vllm": SETTINGS}
        cands = []
        for name, path in (("run0", tiny_base), ("run1", other)):
            cands += ["--candidate", name, str(path), str(tmp_path / f"{backend}-{name}.json")]
        env = {**os.environ, "ORDERMERGE_VLLM_PYTHON": vllm_python}
        log = tmp_path / f"{backend}.log"
        with open(log, "w") as fh:
            proc = subprocess.run([sys.executable, str(ROOT / "scripts/evaluate.py"), "--rule",
                                   "evaluate", "--threads", "2", "--task", "gsm8k", *cands,
                                   "--test", str(test), "--params", json.dumps(params)],
                                  stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=900)
        assert proc.returncode == 0, log.read_text()[-3000:]
        records[backend] = [json.loads((tmp_path / f"{backend}-{n}.json").read_text())
                            for n in ("run0", "run1")]
        if backend == "vllm":
            text = log.read_text()
            assert "engine started" in text and "engine reloaded" in text, text[-3000:]
    from ordermerge.evaluate.generate import greedy_ids
    tie = near_tie(model.config.to_dict(), ctx)
    for hf, vl, path in zip(records["hf"], records["vllm"], (tiny_base, other)):
        assert hf["generation"]["backend"] == "hf" and vl["generation"]["backend"] == "vllm"
        assert vl["generation"]["versions"]["vllm"]
        # the outputs differ only where transformers' greedy pass (the script's batches) meets
        # a near tie (module docstring)
        m, t = load_model(path, torch.float32)
        margins = []
        ids = greedy_ids(m, t, [task.prompt(r) for r in fits], max_new_tokens=40,
                         batch_size=params["batch_size"], margins=margins)
        near = meet_near_tie(margins, ids, t.eos_token_id, tie)
        differ = {i for i, (a, b) in enumerate(zip(hf["examples"], vl["examples"]))
                  if a["output"] != b["output"]}
        assert differ <= near, (path.name, sorted(differ), sorted(near))
    # the perturbed copy answers differently: its weights, not the first model's, were used
    assert [e["output"] for e in records["vllm"][0]["examples"]] != \
        [e["output"] for e in records["vllm"][1]["examples"]]


def test_the_gpu_check_smoke_runs_every_part_with_vllm(vllm_python, tmp_path):
    """bench/gpu_check.py --smoke (CPU, toy sizes), which runs bench/generate.py --backend vllm:
    every part passes, and the generation part compared the two backends."""
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/gpu_check.py"), "--smoke",
                           "--require-vllm", "--json", str(out)], capture_output=True, text=True,
                          env={**os.environ, "ORDERMERGE_VLLM_PYTHON": vllm_python}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["parts"]) == {"sft", "merge", "generate"}
    assert all(p["ok"] for p in res["parts"].values())
    gen = res["parts"]["generate"]["result"]
    assert gen["same_outputs"] == gen["prompts"] == 8
    assert gen["vllm"]["vllm"] and gen["start_s"] > 0 and gen["vllm_new_tokens"] == gen["hf_new_tokens"]
    assert gen["engine_process"] == "in-process"  # the CPU's engine (vllm_worker.in_process)
    assert res["parts"]["merge"]["result"]["same_bytes_as_cpu"] is True


# ---------------------------------------------------------------- without vLLM


def test_a_missing_vllm_is_named_before_any_model_loads(monkeypatch, tmp_path):
    from ordermerge.evaluate import vllm_backend
    monkeypatch.setenv(vllm_backend.ENV, str(tmp_path / "nope" / "python"))
    with pytest.raises(vllm_backend.VLLMError, match="ORDERMERGE_VLLM_PYTHON.*not an executable"):
        vllm_backend.worker_python()
    monkeypatch.delenv(vllm_backend.ENV)
    from ordermerge.evaluate import vllm_env
    monkeypatch.setattr(vllm_env.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(vllm_backend.VLLMError, match="this Python has no vllm"):
        vllm_backend.worker_python()


def test_a_worker_that_dies_is_reported_with_its_status(tmp_path):
    from ordermerge.evaluate.vllm_backend import VLLMError, VLLMSession
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    with VLLMSession(python=str(fake)) as s:
        with pytest.raises(VLLMError, match="exited with status 3 before answering"):
            s.request({"model": "x"})


def test_the_engine_settings_follow_the_transformers_path():
    from ordermerge.evaluate.vllm_backend import engine_settings
    cpu, gpu = engine_settings(SETTINGS, cuda=False), engine_settings(SETTINGS, cuda=True)
    assert (cpu["dtype"], cpu["gpu_memory_utilization"]) == ("float32", 0.1)
    assert (gpu["dtype"], gpu["gpu_memory_utilization"]) == ("bfloat16", 0.9)
    assert "max_model_len" not in cpu
    lazy = {**SETTINGS, "enforce_eager": False}  # compiled on a GPU, eager on the CPU
    assert engine_settings(lazy, cuda=True)["enforce_eager"] is False
    assert engine_settings(lazy, cuda=False)["enforce_eager"] is True
    assert engine_settings({**SETTINGS, "max_model_len": 512}, cuda=True)["max_model_len"] == 512


def test_the_config_check_refuses_tables_of_mixed_backends(tmp_path):
    import yaml
    wd = copy_project(tmp_path / "p", bare=False)
    # GSM8K through vLLM, SST-2 generated (and matched to its options) by transformers
    (wd / "mixed.yaml").write_text(yaml.safe_dump(
        {"tasks": {"gsm8k": {"evaluate": {"backend": "vllm"}},
                   "sst2": {"evaluate": {"choice_scoring": "generate"}}}}))
    proc = snakemake(wd, "-n", "--configfile", "config.yaml", "mixed.yaml", check=False)
    assert proc.returncode != 0
    assert "mix outputs generated by different backends (hf: " in proc.stdout + proc.stderr
    # log-likelihood scoring generates nothing: GSM8K alone through vLLM mixes nothing
    # but the ensemble of the runs (evaluated by transformers) would: refused, naming the fix
    (wd / "one.yaml").write_text(yaml.safe_dump(
        {"tasks": {"gsm8k": {"evaluate": {"backend": "vllm"}}}}))
    proc = snakemake(wd, "-n", "--configfile", "config.yaml", "one.yaml", check=False)
    assert proc.returncode != 0 and "config key merge.ensemble: task gsm8k generates with " \
        "evaluate.backend vllm" in proc.stdout + proc.stderr
    (wd / "one.yaml").write_text(yaml.safe_dump(
        {"tasks": {"gsm8k": {"evaluate": {"backend": "vllm"}}}, "merge": {"ensemble": False}}))
    proc = snakemake(wd, "-n", "--configfile", "config.yaml", "one.yaml", check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wd / "told.yaml").write_text(yaml.safe_dump({"evaluate": {"mixed_backends": True}}))
    assert snakemake(wd, "-n", "--configfile", "config.yaml", "mixed.yaml", "told.yaml",
                     check=False).returncode == 0


def test_the_table_refuses_records_of_different_backends(tmp_path):
    from ordermerge.report.tables import check_backends
    recs = [{"generation": {"backend": "hf", "versions": {"transformers": "5"}}, "path": "a"},
            {"generation": None, "path": "b"},
            {"generation": {"backend": "vllm", "versions": {"vllm": "0.32.0"}}, "path": "c"}]
    with pytest.raises(ValueError, match="table 1: .*a by .*hf.*c by .*vllm"):
        check_backends(recs, "1")
    check_backends(recs, "1", allow_mixed=True)
    check_backends(recs[:2], "1")


def test_general_benchmarks_through_vllm_agree_with_lm_evals_hf(session, tiny_base, monkeypatch):
    """Table 5's vllm backend (the project's worker behind lm-eval's model interface,
    general_eval.vllm_lm) against lm-eval's HFLM, on the tiny base and the tiny lm-eval tasks:
    every option's log-likelihood within float32's reordering bound, the same choices except
    between options nearer than that, and the same generated answers except where greedy
    decoding meets a near tie; each record names its backend."""
    from ordermerge.general_eval import evaluate_general
    from ordermerge.models import load_model
    monkeypatch.chdir(ROOT)
    s = {"tasks": ["tiny_facts", "tiny_sums"], "include_path": ["config/lm_eval/tiny"],
         "metrics": {}, "num_fewshot": None, "limit": 30, "batch_size": 8, "backend": "hf",
         "seed": 1234, "apply_chat_template": False, "add_bos_token": True, "max_length": None,
         "vllm": None}
    hf = evaluate_general(tiny_base, s)
    vl = evaluate_general(tiny_base, {**s, "backend": "vllm", "vllm": SETTINGS}, session=session)
    assert hf["tiny_facts"]["generation"]["backend"] == "hf"
    assert vl["tiny_facts"]["generation"]["backend"] == "vllm"
    assert vl["tiny_sums"]["lm_eval"]["backend"] == "vllm" and vl["tiny_sums"]["n"] == 30
    # two float32 computations of the same tokens by different kernels: a summed
    # log-likelihood of c <= 2 tokens moves by at most about c * (L + 1) * d * 2^-24 * |logit|
    # (d 128, L 4, |logit| < 30 on the tiny base): under 1e-3
    tol = 1e-3
    for a, b in zip(hf["tiny_facts"]["examples"], vl["tiny_facts"]["examples"]):
        assert a["id"] == b["id"]
        assert max(abs(x - y) for x, y in zip(a["logliks"], b["logliks"])) <= tol, (a, b)
        if a["correct"] != b["correct"]:
            top = sorted(a["logliks"])[-2:]
            assert top[1] - top[0] <= 2 * tol, (a, b)
    facts = list(zip(hf["tiny_facts"]["examples"], vl["tiny_facts"]["examples"]))
    sums = list(zip(hf["tiny_sums"]["examples"], vl["tiny_sums"]["examples"]))
    print(f"general benchmarks, hf against vllm: largest log-likelihood difference "
          f"{max(abs(x - y) for a, b in facts for x, y in zip(a['logliks'], b['logliks'])):.2e}, "
          f"{sum(a['correct'] != b['correct'] for a, b in facts)} of {len(facts)} choices and "
          f"{sum(a['output'] != b['output'] for a, b in sums)} of {len(sums)} answers differ; "
          f"scores hf {hf['tiny_facts']['score']:.3f} {hf['tiny_sums']['score']:.3f}, vllm "
          f"{vl['tiny_facts']['score']:.3f} {vl['tiny_sums']['score']:.3f}")
    model, tok = load_model(tiny_base, torch.float32)
    rows = {str(r["id"]): r for r in map(json.loads, (ROOT / "config/lm_eval/tiny/tiny_sums.jsonl")
                                        .read_text().splitlines())}
    tie = near_tie(model.config.to_dict(), 32)
    for a, b in zip(hf["tiny_sums"]["examples"], vl["tiny_sums"]["examples"]):
        if a["output"] == b["output"]:
            assert a["correct"] == b["correct"]
            continue
        prompt = [tok.bos_token_id] + tok(rows[a["id"]]["question"], add_special_tokens=False)["input_ids"]
        x, y = (tok(o, add_special_tokens=False)["input_ids"] for o in (a["output"], b["output"]))
        if x[:len(y)] == y or y[:len(x)] == x:
            # one stopped where the other went on: the stop (the "." of `until`, or EOS) was
            # the shorter one's next token
            short, long_ = sorted((x, y), key=len)
            gaps = [first_gap(model, prompt, short + [stop], long_)[1]
                    for stop in (tok(".", add_special_tokens=False)["input_ids"][0], tok.eos_token_id)]
            gap = min(gaps)
        else:
            _, gap = first_gap(model, prompt, x, y)
        assert gap < tie, (a["output"], b["output"], gap, tie)
