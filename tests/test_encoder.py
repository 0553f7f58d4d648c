"""The encoder family: WordPiece, tiny BERT with MLM, classification and span heads through
SFTRun, identical head initialisation across runs, evaluation, and a merge of two runs."""
import json

import pytest
import torch

from ordermerge.data.orders import make_order
from ordermerge.data.prepare import prepare
from ordermerge.schema import train_defaults
from ordermerge.data.registry import get_task
from ordermerge.encoder import build_tiny_bert, head_class, load_with_head, mlm_pretrain, train_wordpiece
from ordermerge.evaluate.run import evaluate_rows
from ordermerge.merge.engine import merge
from ordermerge.models import save_model
from ordermerge.objectives import SpanExtraction
from ordermerge.sft import SFTRun
from ordermerge.utils import sha256_file

EPOCHS = 8
ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 128}
MLM = {"steps": 40, "batch_size": 16, "max_length": 64, "lr": 3e-3, "weight_decay": 0.0,
       "warmup_ratio": 0.05, "schedule": "cosine", "max_grad_norm": 1.0}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny BERT with a WordPiece tokenizer, MLM-pretrained on the toy rows' text."""
    root = tmp_path_factory.mktemp("bert")
    data = {n: prepare(n, {"source": "toy", "n_train": 96, "n_validation": 8, "n_test": 16}, seed=0,
                       config_key=f"tasks.{n}.data") for n in ("glue_sst2", "squad_v1")}
    lines = [r["sentence"] for r in data["glue_sst2"]["train"]] + \
            [r["context"] + " " + r["question"] for r in data["squad_v1"]["train"]]
    tok = train_wordpiece(lines, vocab_size=200)
    model = build_tiny_bert(ARCH, tok, seed=0)
    curve = mlm_pretrain(model, tok, lines, MLM, seed=0, log=lambda m: None)
    path = root / "base"
    path.mkdir()
    save_model(model, tok, path, torch.bfloat16)
    return path, tok, data, curve


def test_wordpiece_vocab_merges_the_most_frequent_pair_ties_by_text():
    from ordermerge.encoder import wordpiece_vocab
    words = {"low": 5, "lower": 2, "newest": 6, "widest": 3}
    vocab = wordpiece_vocab(words, 17, ["[PAD]", "[UNK]"])
    assert vocab[:13] == ["[PAD]", "[UNK]", "##d", "##e", "##i", "##o", "##r", "##s", "##t", "##w",
                          "l", "n", "w"]
    # (##e ##s) and (##s ##t) both 9: the smaller text first; then ##est (9); then ##o ##w and
    # l ##o both 7: ##ow first; then l ##ow
    assert vocab[13:] == ["##es", "##est", "##ow", "low"]


def test_wordpiece_training_gives_the_same_bytes_in_every_process():
    """The tokenizers library's WordPieceTrainer gave a different vocabulary per process
    (hash-map order): two fresh interpreters must now agree."""
    import subprocess
    import sys
    code = ("import random; from ordermerge.encoder import train_wordpiece; r = random.Random(0); "
            "words = [''.join(r.choice('abcdefgh') for _ in range(r.randint(2, 7))) for _ in range(300)]; "
            "lines = [' '.join(r.choice(words) for _ in range(8)) for _ in range(200)]; "
            "print(train_wordpiece(lines, 120).backend_tokenizer.to_str())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout for _ in range(3)}
    assert len(outs) == 1


def test_wordpiece_pairs_and_mlm_pretraining(base):
    _, tok, _, curve = base
    enc = tok("a film", "is great")
    assert enc["input_ids"][0] == tok.cls_token_id and enc["input_ids"].count(tok.sep_token_id) == 2
    assert set(enc["token_type_ids"]) == {0, 1}
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5  # the masked-LM loss goes down


def test_span_features_map_the_answer_to_tokens(base):
    _, tok, data, _ = base
    task = get_task("squad_v1")
    obj = SpanExtraction(task, tok, max_length=96)
    for row in data["squad_v1"]["train"][:20]:
        e = obj.encode(row)
        a, b = e["offsets"][e["start"]][0], e["offsets"][e["end"]][1]
        assert row["context"][a:b].lower() == row["answers"]["text"][0].lower()
    short = SpanExtraction(task, tok, max_length=12)
    with pytest.raises(ValueError, match="raise max_length"):
        for row in data["squad_v1"]["train"]:
            short.encode(row)


@pytest.mark.parametrize("name,lr", [("glue_sst2", 3e-3), ("squad_v1", 3e-3)])
def test_encoder_sft_runs_merge_and_evaluate(base, tmp_path, name, lr):
    path, tok, data, _ = base
    task = get_task(name)
    rows = data[name]
    ids = [r["id"] for r in rows["train"]]
    cfg = {**train_defaults(), "lr": lr, "batch_size": 8, "micro_batch_size": 4, "max_length": 96,
           "warmup_ratio": 0.05}
    runs = []
    for run in range(2):
        model = load_with_head(task, path, seed=0)
        order = make_order(ids, scheme="shuffle", run=run, epochs=EPOCHS, seed=0, task=name)
        out = tmp_path / f"run{run}"
        summary = SFTRun(model, tok, train_rows=rows["train"], validation_rows=rows["validation"],
                         task=task, order=order, cfg=cfg, save_dtype=torch.bfloat16, out_dir=out,
                         provenance={"rule": "test", "params": cfg, "seeds": {}, "inputs": []},
                         log=lambda m: None, seed=run).run()
        runs.append((out, summary))
    # the head starts from the same weights in every run (seeded by the task)
    a = load_with_head(task, path, seed=0).state_dict()
    b = load_with_head(task, path, seed=0).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # seeded dropout: the same run gives the same weights whatever ran before in this process
    torch.manual_seed(12345)
    again = tmp_path / "again"
    SFTRun(load_with_head(task, path, seed=0), tok, train_rows=rows["train"],
           validation_rows=rows["validation"], task=task,
           order=make_order(ids, scheme="shuffle", run=0, epochs=EPOCHS, seed=0, task=name), cfg=cfg,
           save_dtype=torch.bfloat16, out_dir=again,
           provenance={"rule": "test", "params": cfg, "seeds": {}, "inputs": []},
           log=lambda m: None, seed=0).run()
    assert sha256_file(again / f"epoch{EPOCHS}" / "model.safetensors") == \
        sha256_file(runs[0][0] / f"epoch{EPOCHS}" / "model.safetensors")
    # the two sub-models merge with the engine and the merge loads with its head
    merged = tmp_path / "merged"
    merge("select", [runs[0][0] / f"epoch{EPOCHS}", runs[1][0] / f"epoch{EPOCHS}"], merged, seed=1)
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
    cls = AutoModelForQuestionAnswering if name == "squad_v1" else AutoModelForSequenceClassification
    assert head_class(task) is cls
    m = cls.from_pretrained(merged, dtype=torch.float32)
    rec = evaluate_rows(m, tok, task, rows["test"], max_length=96, batch_size=8)
    assert rec["n"] == 16 and len(rec["examples"]) == 16
    assert rec["score"] == sum(e["correct"] for e in rec["examples"]) / 16
    single = evaluate_rows(cls.from_pretrained(runs[0][0] / f"epoch{EPOCHS}", dtype=torch.float32), tok,
                           task, rows["test"], max_length=96, batch_size=8)
    # templated sentiment and one-sentence-per-person contexts: the tiny BERT learns both
    assert single["score"] >= (0.75 if name == "glue_sst2" else 0.3)
    json.dumps(rec)  # the record is JSON
