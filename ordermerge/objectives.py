"""What one SFT run optimises, per model family: encoding, padding and per-row losses.

`SFTRun` (sft.py) is the same for every family; an objective tells it how a row
becomes an example (with its number of loss terms, `n_target`), how examples
are padded into a batch, and each row's summed loss and term count.

- `CausalLM`: decoder tasks; bos + prompt + target + eos, loss on the target
  tokens only (prompt masked), terms = target tokens.
- `SequenceClassification`: encoder classification (SST-2, MNLI); text or a
  text pair, cross-entropy of the label, one term per row.
- `SpanExtraction`: encoder QA (SQuAD); question and context as a pair
  (context truncated), cross-entropy of the answer's start and end tokens,
  averaged, one term per row. The answer's character span is mapped to tokens
  through the fast tokenizer's offsets; a row whose answer the truncation cuts
  off is an error naming it (the max length is too short).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .train import IGNORE, collate, encode_example, pad, token_losses


class CausalLM:
    def __init__(self, task, tokenizer, max_length: int):
        self.task, self.tokenizer, self.max_length = task, tokenizer, max_length

    def encode(self, row: dict) -> dict:
        e = encode_example(self.task.prompt(row), self.task.target(row), self.tokenizer,
                           self.max_length)
        e["n_target"] = sum(1 for x in e["labels"][1:] if x != IGNORE)
        return e

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return collate(examples, self.tokenizer.pad_token_id)

    def losses(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return token_losses(model, batch)


# what an encoder's forward pass reads from a collated batch
ENCODER_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def _pad(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad each of ENCODER_INPUTS (input_ids with `pad_id`, the others with 0)."""
    return {k: pad([e[k] for e in examples], pad_id if k == "input_ids" else 0)
            for k in ENCODER_INPUTS}


def encoder_forward(model, batch: dict):
    """An encoder's forward pass on a collated batch (its labels left out)."""
    return model(**{k: batch[k] for k in ENCODER_INPUTS})


class SequenceClassification:
    def __init__(self, task, tokenizer, max_length: int):
        self.task, self.tokenizer, self.max_length = task, tokenizer, max_length

    def encode(self, row: dict) -> dict:
        a, b = self.task.segments(row)
        enc = self.tokenizer(a, b, truncation=True, max_length=self.max_length)
        return {"input_ids": enc["input_ids"], "token_type_ids": enc.get("token_type_ids", [0] * len(enc["input_ids"])),
                "attention_mask": [1] * len(enc["input_ids"]), "label": int(row["label"]),
                "n_target": 1, "truncated": len(self.tokenizer(a, b)["input_ids"]) > self.max_length}

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = _pad(examples, self.tokenizer.pad_token_id)
        batch["labels"] = torch.tensor([e["label"] for e in examples])
        return batch

    def losses(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = encoder_forward(model, batch).logits
        ce = F.cross_entropy(logits.float(), batch["labels"], reduction="none")
        return ce, torch.ones_like(ce, dtype=torch.long)


class SpanExtraction:
    def __init__(self, task, tokenizer, max_length: int):
        self.task, self.tokenizer, self.max_length = task, tokenizer, max_length

    def features(self, row: dict) -> dict:
        """Token ids of (question, context) with the context truncated, and the offsets
        of every context token in the context (None for question and special tokens)."""
        question, context = self.task.segments(row)
        enc = self.tokenizer(question, context, truncation="only_second",
                             max_length=self.max_length, return_offsets_mapping=True)
        seq = enc.sequence_ids()
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"], seq)]
        return {"input_ids": enc["input_ids"],
                "token_type_ids": enc.get("token_type_ids", [0] * len(enc["input_ids"])),
                "attention_mask": [1] * len(enc["input_ids"]), "offsets": offsets}

    def encode(self, row: dict) -> dict:
        f = self.features(row)
        text = row["answers"]["text"][0]
        start_char = int(row["answers"]["answer_start"][0])
        end_char = start_char + len(text)
        start = end = None
        for i, o in enumerate(f["offsets"]):
            if o is None:
                continue
            if start is None and o[0] <= start_char < o[1]:
                start = i
            if o[0] < end_char <= o[1]:
                end = i
        if start is None or end is None:
            raise ValueError(f"row {row.get('id')}: answer {text!r} at character {start_char} is "
                             f"not inside the first {self.max_length} tokens (raise max_length)")
        f.update(start=start, end=end, n_target=1, truncated=False)
        return f

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = _pad(examples, self.tokenizer.pad_token_id)
        batch["start_positions"] = torch.tensor([e["start"] for e in examples])
        batch["end_positions"] = torch.tensor([e["end"] for e in examples])
        return batch

    def losses(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        out = encoder_forward(model, batch)
        mask = batch["attention_mask"] == 0
        s = out.start_logits.float().masked_fill(mask, -1e4)
        e = out.end_logits.float().masked_fill(mask, -1e4)
        ce = (F.cross_entropy(s, batch["start_positions"], reduction="none")
              + F.cross_entropy(e, batch["end_positions"], reduction="none")) / 2
        return ce, torch.ones_like(ce, dtype=torch.long)

    def best_span(self, start_logits: torch.Tensor, end_logits: torch.Tensor, offsets, context: str,
                  max_answer_tokens: int = 30) -> str:
        """The context text of the highest-scoring span start <= end (context tokens only)."""
        ctx = [i for i, o in enumerate(offsets) if o is not None]
        best, best_score = ("", float("-inf"))
        for i in ctx:
            for j in ctx:
                if j < i or j - i >= max_answer_tokens:
                    continue
                score = float(start_logits[i] + end_logits[j])
                if score > best_score:
                    best, best_score = context[offsets[i][0]:offsets[j][1]], score
        return best


def objective_for(task, tokenizer, max_length: int):
    if task.family == "decoder":
        return CausalLM(task, tokenizer, max_length)
    if task.span:
        return SpanExtraction(task, tokenizer, max_length)
    return SequenceClassification(task, tokenizer, max_length)


def sample_losses(model, objective, examples: dict[str, dict], ids, batch_size: int,
                  device="cpu", autocast=contextlib.nullcontext) -> dict[str, float]:
    """{id: mean loss term} for `ids` (encoded `examples`), `batch_size` rows at a time."""
    out = {}
    ids = list(ids)
    with torch.no_grad():
        for m in range(0, len(ids), batch_size):
            rows = ids[m:m + batch_size]
            batch = objective.collate([examples[i] for i in rows])
            batch = {key: v.to(device) for key, v in batch.items()}
            with autocast():
                total, count = objective.losses(model, batch)
            out.update({i: t / max(c, 1) for i, t, c in zip(rows, total.tolist(), count.tolist())})
    return out
