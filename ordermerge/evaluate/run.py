"""Greedy evaluation of one model on one task's test rows; every example is kept."""
from __future__ import annotations

from . import get_evaluator
from .generate import generate_greedy


def evaluate_rows(model, tokenizer, task, rows: list[dict], *, max_new_tokens: int,
                  batch_size: int) -> dict:
    ev = get_evaluator(task.evaluator)
    prompts = [task.prompt(r) for r in rows]
    outputs = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, stop=list(ev.stop))
    examples = []
    for row, prompt, output in zip(rows, prompts, outputs):
        pred, rule = ev.extract(output)
        gold = task.gold(row)
        examples.append({"id": row["id"], "prompt": prompt, "output": output, "extracted": pred,
                         "extraction": rule, "gold": gold, "correct": ev.correct(pred, gold)})
    n = len(examples)
    return {"task": task.name, "evaluator": ev.name, "metric": task.metric,
            "score": sum(e["correct"] for e in examples) / n if n else float("nan"),
            "n": n, "examples": examples}
