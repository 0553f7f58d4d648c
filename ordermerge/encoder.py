"""The encoder family (Table 2): a BERT tokenizer, a tiny BERT, its MLM pretraining, and heads.

The tiny suite's encoder is a BertForMaskedLM built from a config with a
WordPiece tokenizer trained on the suite's text, pretrained briefly with
masked-language modelling (15% of tokens: 80% [MASK], 10% random, 10% kept).
Fine-tuning loads it (or any BERT-family checkpoint) with a task head:
sequence classification for SST-2 / MNLI, span extraction for SQuAD. The head
is initialised from a seed of the task alone, so the K sub-models of a task
start from one identical model, as merging needs.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from .utils import InputError, derive_seed

BERT_SPECIAL = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                "sep_token": "[SEP]", "mask_token": "[MASK]"}


def wordpiece_vocab(words: dict[str, int], vocab_size: int, specials: list[str]) -> list[str]:
    """A WordPiece vocabulary learned from word counts by BPE merges (what the tokenizers
    library's WordPieceTrainer does): pieces after a word's first character carry ``##``;
    each step merges the most frequent adjacent pair, ties broken by the pieces' text. The
    library's trainer numbers ``##`` pieces in hash-map order and breaks ties by those
    numbers, so one corpus gave different vocabularies in different processes; this one
    depends on the words and counts only. Order: specials, the alphabet sorted, merges."""
    seqs = [([w[0]] + ["##" + c for c in w[1:]], n) for w, n in sorted(words.items()) if w]
    vocab = list(dict.fromkeys([*specials, *sorted({p for seq, _ in seqs for p in seq})]))
    known = set(vocab)
    while len(vocab) < vocab_size:
        pairs: dict[tuple[str, str], int] = {}
        for seq, n in seqs:
            for pair in zip(seq, seq[1:]):
                pairs[pair] = pairs.get(pair, 0) + n
        if not pairs:
            break
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        new = a + b[2:]
        for seq, _ in seqs:
            i = 0
            while i < len(seq) - 1:
                if seq[i] == a and seq[i + 1] == b:
                    seq[i:i + 2] = [new]
                i += 1
        if new not in known:
            vocab.append(new)
            known.add(new)
    return vocab


def train_wordpiece(texts: list[str], vocab_size: int):
    """An uncased WordPiece tokenizer with BERT's special tokens and pair template, its
    vocabulary from wordpiece_vocab (the same texts give the same bytes)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts: dict[str, int] = {}
    for text in texts:
        for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word] = counts.get(word, 0) + 1
    vocab = wordpiece_vocab(counts, vocab_size, specials)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre, decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **BERT_SPECIAL,
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def build_tiny_bert(arch: dict, tokenizer, seed: int):
    from transformers import BertConfig, BertForMaskedLM
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=arch["hidden_size"],
                        num_hidden_layers=arch["num_hidden_layers"],
                        num_attention_heads=arch["num_attention_heads"],
                        intermediate_size=arch["intermediate_size"],
                        max_position_embeddings=arch["max_position_embeddings"],
                        pad_token_id=tokenizer.pad_token_id, type_vocab_size=2)
    torch.manual_seed(seed)
    return BertForMaskedLM(config)


def mask_tokens(ids: torch.Tensor, tokenizer, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of a [B, L] batch: inputs and labels (-100 where not predicted)."""
    labels = ids.clone()
    special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in ids.tolist()])
    chosen = (torch.rand(ids.shape, generator=gen) < 0.15) & ~special
    labels[~chosen] = -100
    inputs = ids.clone()
    roll = torch.rand(ids.shape, generator=gen)
    inputs[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    random_ids = torch.randint(len(tokenizer), ids.shape, generator=gen)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_ids[swap]
    return inputs, labels


def mlm_pretrain(model, tokenizer, lines: list[str], cfg: dict, seed: int, log) -> list[float]:
    """Masked-LM pretraining on random lines (padded to the batch's longest)."""
    from .train import run_steps
    rng = random.Random(derive_seed(seed, "mlm-lines"))
    gen = torch.Generator().manual_seed(derive_seed(seed, "mlm-masks"))

    def loss_of_step(step: int) -> torch.Tensor:
        batch = tokenizer([rng.choice(lines) for _ in range(cfg["batch_size"])], padding=True,
                          truncation=True, max_length=cfg["max_length"], return_tensors="pt")
        inputs, labels = mask_tokens(batch["input_ids"], tokenizer, gen)
        labels[batch["attention_mask"] == 0] = -100
        return model(input_ids=inputs, attention_mask=batch["attention_mask"], labels=labels).loss
    return run_steps(model, cfg, loss_of_step, log, "mlm")


def head_class(task):
    """The transformers class of `task`'s encoder with its head."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
    return AutoModelForQuestionAnswering if task.span else AutoModelForSequenceClassification


def load_with_head(task, base, seed: int, dtype=torch.float32):
    """The base encoder with the task's head, the head initialised from (seed, task)."""
    torch.manual_seed(derive_seed(seed, task.name, "head"))
    cls = head_class(task)
    if task.span:
        return cls.from_pretrained(base, dtype=dtype)
    labels = task.options({})
    return cls.from_pretrained(
        base, dtype=dtype, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={v: k for k, v in enumerate(labels)})


def make_encoder(cfg: dict, out_dir: Path, train_files: list[Path], log=print) -> None:
    """The encoder of the encoder tasks, saved into `out_dir` in `cfg["dtype"]`: for source
    tiny a WordPiece tokenizer and a BERT trained on the tasks' training text (each row's
    input as plain text; the loss curve beside it, pretrain_log.json), else the pretrained
    source."""
    from .models import dtype_of, load_pretrained_source, save_model
    if cfg["source"] != "tiny":
        from transformers import AutoModelForMaskedLM
        model, tokenizer = load_pretrained_source(cfg["source"], "float32", "encoder.source",
                                                  AutoModelForMaskedLM)
        save_model(model, tokenizer, out_dir, dtype_of(cfg["dtype"]))
        return
    import json

    from .data.registry import get_task
    from .utils import read_jsonl
    if not train_files:
        raise InputError("encoder_base: no encoder task's training rows to pretrain on")
    lines = []
    for f in train_files:  # results/data/<task>/train.jsonl
        task = get_task(Path(f).parent.name)
        lines += [task.encoder_text(r) for r in read_jsonl(f)]
    tokenizer = train_wordpiece(lines, cfg["vocab_size"])
    model = build_tiny_bert(cfg["tiny"], tokenizer, cfg["seed"])
    log(f"tiny bert: {sum(p.numel() for p in model.parameters())} parameters, "
        f"{len(tokenizer)} tokens, {len(lines)} pretraining lines")
    curve = mlm_pretrain(model, tokenizer, lines, cfg["pretrain"], cfg["seed"], log)
    (out_dir / "pretrain_log.json").write_text(json.dumps({"loss": curve}, indent=1) + "\n")
    save_model(model, tokenizer, out_dir, dtype_of(cfg["dtype"]))


def init_task_model(task_name: str, base: Path, out_dir: Path, cfg: dict) -> int:
    """An encoder task's starting model (the encoder with the task's head, the head seeded
    by the task) saved into `out_dir` in `cfg["dtype"]`; returns the head seed."""
    from transformers import AutoTokenizer

    from .data.registry import get_task
    from .models import dtype_of, save_model
    task = get_task(task_name)
    if task.family != "encoder":
        raise InputError(f"encoder_init: task {task.name!r} is not an encoder task")
    seed = derive_seed(cfg["seed"], "encoder-head")
    save_model(load_with_head(task, base, seed), AutoTokenizer.from_pretrained(base), out_dir,
               dtype_of(cfg["dtype"]))
    return seed
