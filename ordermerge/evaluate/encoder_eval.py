"""Evaluation of an encoder with a task head: classification accuracy, SQuAD exact match.

Classification: the argmax of the head's logits against the label. Span
extraction: the highest-scoring context span (start <= end, at most 30
tokens), its text compared with the gold answers by SQuAD exact match (F1
reported beside it). Every example is kept, as for decoders.
"""
from __future__ import annotations

import torch

from ..objectives import SequenceClassification, SpanExtraction
from .text_answers import squad_exact_match, squad_f1


@torch.no_grad()
def evaluate_encoder(model, tokenizer, task, rows: list[dict], *, max_length: int,
                     batch_size: int) -> dict:
    model.eval()
    examples = []
    if task.evaluator == "encoder_span":
        obj = SpanExtraction(task, tokenizer, max_length)
        feats = [obj.features(r) for r in rows]
        for b in range(0, len(rows), batch_size):
            chunk = feats[b:b + batch_size]
            batch = obj.collate([{**f, "start": 0, "end": 0} for f in chunk])
            out = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                        attention_mask=batch["attention_mask"])
            for k, (row, f) in enumerate(zip(rows[b:b + batch_size], chunk)):
                pred = obj.best_span(out.start_logits[k], out.end_logits[k], f["offsets"],
                                     row["context"])
                gold = task.gold(row)
                examples.append({"id": row["id"], "prompt": task.prompt(row), "output": pred,
                                 "extracted": pred, "extraction": "best-span", "gold": gold,
                                 "correct": squad_exact_match(pred, gold), "f1": squad_f1(pred, gold)})
    else:
        obj = SequenceClassification(task, tokenizer, max_length)
        labels = task.options({})
        for b in range(0, len(rows), batch_size):
            chunk = rows[b:b + batch_size]
            batch = obj.collate([obj.encode(r) for r in chunk])
            logits = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                           attention_mask=batch["attention_mask"]).logits
            for row, lg in zip(chunk, logits):
                pick = int(lg.argmax())
                gold = task.gold(row)
                examples.append({"id": row["id"], "prompt": task.prompt(row), "output": labels[pick],
                                 "extracted": pick, "extraction": "argmax", "gold": gold,
                                 "correct": pick == gold, "logits": [float(x) for x in lg]})
    n = len(examples)
    record = {"task": task.name, "evaluator": task.evaluator, "metric": task.metric,
              "score": sum(e["correct"] for e in examples) / n if n else float("nan"),
              "n": n, "examples": examples}
    if task.evaluator == "encoder_span":
        record["f1"] = sum(e["f1"] for e in examples) / n if n else float("nan")
    return record
