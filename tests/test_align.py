"""Vocabulary alignment before a multi-task merge (MergeLM's way): extra tokens added to
every model with mean-initialised rows, the aligned tokenizer shipped, errors on clashes."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from ordermerge.merge.align import align
from ordermerge.merge.engine import MergeError, merge
from ordermerge.models import build_tiny, train_tokenizer

ARCH = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "max_position_embeddings": 64, "tie_word_embeddings": False}


def tiny(path, tokenizer, seed, add=None):
    model = build_tiny(ARCH, tokenizer, seed)
    if add:
        tokenizer = type(tokenizer).from_pretrained(path.parent / "tok")
        tokenizer.add_special_tokens({"additional_special_tokens": add})
        model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def models(tmp_path):
    tok = train_tokenizer(["the cat sat on the mat 123", "a dog ran 45 miles"] * 20, 300)
    tok.save_pretrained(tmp_path / "tok")
    base = tiny(tmp_path / "base", tok, 0)
    a = tiny(tmp_path / "a", tok, 1)
    b = tiny(tmp_path / "b", tok, 2, add=["[PAD]"])
    return tmp_path, base, a, b, len(tok)


def test_smaller_models_get_the_added_token_with_mean_rows(models):
    tmp, base, a, b, v = models
    rec = align({"a": a, "b": b}, base, tmp / "out")
    assert rec["rows"] == {"a": v, "b": v + 1, "base": v} and rec["target_rows"] == v + 1
    assert rec["added_tokens"] == ["[PAD]"] and sorted(rec["extended"]) == ["a", "base"]
    for name, src in (("a", a), ("base", base)):
        old, new = load_file(str(src / "model.safetensors")), load_file(str(tmp / "out" / name / "model.safetensors"))
        for key in ("model.embed_tokens.weight", "lm_head.weight"):
            assert new[key].shape[0] == v + 1
            assert torch.equal(new[key][:v], old[key])
            want = old[key].float().mean(0).to(old[key].dtype)
            assert torch.equal(new[key][v], want)
        assert json.loads((tmp / "out" / name / "config.json").read_text())["vocab_size"] == v + 1
        assert "[PAD]" in (tmp / "out" / name / "tokenizer.json").read_text()
    # b needed nothing: hard links, not copies
    assert os.stat(tmp / "out/b/model.safetensors").st_ino == os.stat(b / "model.safetensors").st_ino
    # the aligned models merge, and the merge loads and carries the aligned tokenizer
    merge("ties", [tmp / "out/a", tmp / "out/b"], tmp / "m", base=tmp / "out/base", density=0.5)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tmp / "m")
    assert model.get_input_embeddings().weight.shape[0] == v + 1
    assert len(AutoTokenizer.from_pretrained(tmp / "m")) == v + 1


def test_different_tokens_at_the_same_ids_are_refused(models, tmp_path):
    tmp, base, a, b, v = models
    c = tiny(tmp / "c", load_tok(tmp), 3, add=["<extra>"])
    with pytest.raises(MergeError, match=r"different tokens at ids .*\['\[PAD\]'\] vs \['<extra>'\]"):
        align({"b": b, "c": c}, base, tmp_path / "x")


def load_tok(tmp):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tmp / "tok")
