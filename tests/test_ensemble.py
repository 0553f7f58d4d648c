"""The ensemble of the runs (evaluate/ensemble.py): its outputs are the log of the averaged
distributions, its greedy decoding (K models stepping with their own KV caches) is the
argmax of the averaged next-token distribution at every step (against a loop that
recomputes every prefix), an ensemble of one model decodes as transformers' generate does,
and evaluate_model evaluates a list of checkpoints as their ensemble."""
import math

import pytest
import torch

from ordermerge.evaluate.ensemble import Ensemble
from ordermerge.evaluate.generate import encode_prompts, greedy_ids
from ulps import gamma

ARCH = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
        "max_position_embeddings": 128, "tie_word_embeddings": False}
PROMPTS = ["Question: what is 2 + 3?", "Q: 7", "Question: a longer prompt about 11 apples and 4 pears?"]


@pytest.fixture(scope="module")
def llamas():
    from ordermerge.models import build_tiny, train_tokenizer
    tok = train_tokenizer(PROMPTS * 3 + ["Answer: 5 apples", "#### 15"], 200)
    return tok, [build_tiny(ARCH, tok, seed=s).float().eval() for s in range(3)]


def test_the_outputs_are_the_log_of_the_averaged_distributions(llamas):
    tok, models = llamas
    ids = torch.tensor([encode_prompts(tok, PROMPTS[:1])[0]])
    with torch.no_grad():
        got = Ensemble(models[:2])(input_ids=ids).logits
        p = sum(torch.softmax(m(input_ids=ids).logits.double(), -1) for m in models[:2]) / 2
    want = p.log()
    # float32 log-softmax and logsumexp of values of magnitude |log p|: a few roundings each
    assert torch.allclose(got.double(), want, rtol=0, atol=gamma(8) * float(want.abs().max()) + 1e-6)
    assert torch.allclose(got.exp().sum(-1), torch.ones(got.shape[:-1]), atol=gamma(got.shape[-1]))


def _reference_greedy(models, tok, prompt_ids: list[int], steps: int) -> list[int]:
    """Greedy on the averaged distribution, every prefix recomputed in full (no cache, no
    padding): what the ensemble's cached, batched decoding must give."""
    seq, out = list(prompt_ids), []
    for _ in range(steps):
        with torch.no_grad():
            lp = torch.stack([torch.log_softmax(m(input_ids=torch.tensor([seq])).logits[0, -1].float(), -1)
                              for m in models])
        nxt = int((torch.logsumexp(lp, 0) - math.log(len(models))).argmax())
        out.append(nxt)
        if nxt == tok.eos_token_id:
            break
        seq.append(nxt)
    return out


def test_the_ensembles_greedy_decoding_is_the_argmax_of_the_averaged_distribution(llamas):
    """Three prompts of different lengths in one left-padded batch: each completion equals
    the uncached, unpadded reference (up to its EOS; padding after it)."""
    tok, models = llamas
    got = greedy_ids(Ensemble(models), tok, PROMPTS, max_new_tokens=6, batch_size=3)
    for prompt, ids in zip(encode_prompts(tok, PROMPTS), got):
        want = _reference_greedy(models, tok, prompt, 6)
        assert ids[:len(want)] == want and all(t == tok.pad_token_id for t in ids[len(want):])


def test_an_ensemble_of_one_decodes_as_transformers_generate(llamas):
    tok, models = llamas
    one = greedy_ids(Ensemble(models[:1]), tok, PROMPTS, max_new_tokens=8, batch_size=3)
    assert one == greedy_ids(models[0], tok, PROMPTS, max_new_tokens=8, batch_size=3)


def test_evaluate_model_takes_a_list_as_the_ensemble(tmp_path, llamas):
    from ordermerge.data.registry import get_task
    from ordermerge.evaluate.run import evaluate_model
    from ordermerge.utils import InputError
    tok, models = llamas
    dirs = []
    for i, m in enumerate(models[:2]):
        d = tmp_path / f"run{i}"
        m.save_pretrained(d)
        tok.save_pretrained(d)
        dirs.append(d)
    task = get_task("gsm8k")
    rows = [{"id": "a", "question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}]
    cfg = {"max_new_tokens": 4, "batch_size": 2, "choice_scoring": "loglik", "backend": "hf",
           "kind": "ensemble", "epoch": 1, "scheme": "shuffle", "model": "tiny", "max_length": 64,
           "name": "runs"}
    rec = evaluate_model(task, dirs, rows, cfg)
    assert rec["model_path"] == [str(d) for d in dirs] and rec["kind"] == "ensemble"
    # what the evaluator makes of the ensemble of the same weights, in memory
    from ordermerge.evaluate.run import evaluate_rows
    want = evaluate_rows(Ensemble(models[:2]), tok, task, rows, max_new_tokens=4, batch_size=2,
                         max_length=64, name="x")
    assert [e["output"] for e in rec["examples"]] == [e["output"] for e in want["examples"]]
    with pytest.raises(InputError, match="the ensemble of the runs is evaluated with transformers"):
        evaluate_model(task, dirs, rows, {**cfg, "backend": "vllm"})
    other = tmp_path / "other"
    models[2].save_pretrained(other)
    tok.save_pretrained(other)
    import json
    conf = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**conf, "model_max_length": 7}))
    with pytest.raises(InputError, match="different tokenizer files"):
        evaluate_model(task, [dirs[0], other], rows, cfg)


def test_an_encoder_ensemble_averages_the_class_distributions():
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=24, num_labels=3)
    models = [BertForSequenceClassification(cfg).eval() for _ in range(2)]
    ids = torch.randint(0, 50, (4, 7))
    with torch.no_grad():
        got = Ensemble(models)(input_ids=ids).logits
        want = (sum(torch.softmax(m(input_ids=ids).logits.double(), -1) for m in models) / 2).log()
    assert torch.allclose(got.double(), want, rtol=0, atol=gamma(8) * float(want.abs().max()) + 1e-6)


def test_generation_prints_progress_at_the_interval(llamas, capsys, monkeypatch):
    """greedy_ids prints a progress line after a batch once progress.EVERY_S has passed
    (here 0: after every batch), counting prompts and the new tokens up to each EOS."""
    from ordermerge import progress
    tok, models = llamas
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    capsys.readouterr()
    got = greedy_ids(models[0], tok, PROMPTS, max_new_tokens=5, batch_size=2)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("progress:")]
    assert [line.split(",")[0] for line in lines] == ["progress: prompt 2/3 (66.7%)",
                                                      "progress: prompt 3/3 (100.0%)"]
    assert all(" new tokens/s " in line and ", elapsed " in line for line in lines)
    assert lines[-1].endswith("eta 0:00:00") and len(got) == 3
