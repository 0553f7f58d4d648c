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

import torch

from .utils import derive_seed

BERT_SPECIAL = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                "sep_token": "[SEP]", "mask_token": "[MASK]"}


def train_wordpiece(texts: list[str], vocab_size: int):
    """An uncased WordPiece tokenizer with BERT's special tokens and pair template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size,
                                                             special_tokens=specials,
                                                             show_progress=False))
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


def load_with_head(task, base, seed: int, dtype=torch.float32):
    """The base encoder with the task's head, the head initialised from (seed, task)."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
    torch.manual_seed(derive_seed(seed, task.name, "head"))
    if task.evaluator == "encoder_span":
        return AutoModelForQuestionAnswering.from_pretrained(base, dtype=dtype)
    labels = task.options({})
    return AutoModelForSequenceClassification.from_pretrained(
        base, dtype=dtype, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={v: k for k, v in enumerate(labels)})
