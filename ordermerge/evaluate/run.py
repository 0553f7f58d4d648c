"""Evaluation of one model on one task's test rows; every example is kept."""
from __future__ import annotations

from . import get_evaluator
from .choice import option_logliks
from .generate import generate_greedy
from .text_answers import match_option


def evaluate_rows(model, tokenizer, task, rows: list[dict], *, max_new_tokens: int,
                  batch_size: int, choice_scoring: str = "loglik", judge=None,
                  annotators_config: str = "alpaca_eval_gpt4", name: str = "model") -> dict:
    """Score `rows`; the record lists every example: id, prompt, output, extracted answer,
    gold and whether it is correct (and, for log-likelihood scoring, every option's)."""
    ev = get_evaluator(task.evaluator)
    prompts = [task.prompt(r) for r in rows]
    golds = [task.gold(r) for r in rows]
    examples = []
    if ev.kind == "choice":
        options = [task.options(r) for r in rows]
        if choice_scoring == "loglik":
            scores = option_logliks(model, tokenizer, prompts, options, batch_size=batch_size)
            for row, prompt, opts, sc, gold in zip(rows, prompts, options, scores, golds):
                pick = max(range(len(opts)), key=lambda k: sc[k])
                norm = max(range(len(opts)), key=lambda k: sc[k] / max(len(opts[k]), 1))
                examples.append({"id": row["id"], "prompt": prompt, "output": opts[pick],
                                 "extracted": pick, "extraction": "loglik", "gold": gold,
                                 "correct": pick == gold, "options": opts, "logliks": sc,
                                 "correct_norm": norm == gold})
        elif choice_scoring == "generate":
            outputs = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                      batch_size=batch_size, stop=list(ev.stop))
            for row, prompt, opts, output, gold in zip(rows, prompts, options, outputs, golds):
                pick = match_option(output, opts)
                examples.append({"id": row["id"], "prompt": prompt, "output": output,
                                 "extracted": pick, "extraction": "generate-match", "gold": gold,
                                 "correct": pick == gold, "options": opts})
        else:
            raise ValueError(f"choice_scoring {choice_scoring!r}: loglik or generate")
    elif ev.kind == "pairwise":
        from .alpaca import win_rate
        outputs = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, stop=list(ev.stop))
        ours = [{"instruction": r["instruction"], "output": o, "generator": name}
                for r, o in zip(rows, outputs)]
        refs = [{"instruction": r["instruction"], "output": r["output"],
                 "generator": r.get("generator", "reference")} for r in rows]
        rate, annotations = win_rate(ours, refs, annotators_config=annotators_config, judge=judge,
                                     name=name)
        by_instruction = {a["instruction"]: a for a in annotations}
        for row, prompt, output, gold in zip(rows, prompts, outputs, golds):
            a = by_instruction[row["instruction"]]
            pref = a.get("preference")  # 2: ours preferred, 1: the reference, 1.5: a tie
            examples.append({"id": row["id"], "prompt": prompt, "output": output,
                             "extracted": output, "extraction": "generation", "gold": gold,
                             "correct": None if pref is None else (pref - 1.0),
                             "judgment": {k: (v if isinstance(v, (str, int, float, type(None))) else str(v))
                                          for k, v in a.items()}})
        n = len(examples)
        return {"task": task.name, "evaluator": ev.name, "metric": task.metric,
                "score": rate / 100.0, "win_rate": rate, "judge": annotators_config if judge is None
                else f"local ({annotators_config} prompt)", "n": n, "examples": examples}
    elif ev.kind == "code":
        from .humaneval import check
        outputs = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, stop=list(ev.stop))
        results = check(rows, outputs)
        for row, prompt, output, gold, res in zip(rows, prompts, outputs, golds, results):
            examples.append({"id": row["id"], "prompt": prompt, "output": output,
                             "extracted": output, "extraction": "completion", "gold": gold,
                             "correct": res["passed"], "execution": res})
    else:
        outputs = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, stop=list(ev.stop))
        for row, prompt, output, gold in zip(rows, prompts, outputs, golds):
            pred, rule = ev.extract(output)
            examples.append({"id": row["id"], "prompt": prompt, "output": output, "extracted": pred,
                             "extraction": rule, "gold": gold, "correct": ev.correct(pred, gold)})
    n = len(examples)
    record = {"task": task.name, "evaluator": ev.name, "metric": task.metric,
              "score": sum(e["correct"] for e in examples) / n if n else float("nan"),
              "n": n, "examples": examples}
    if ev.kind == "code":
        record["pass@1"] = record["score"]  # greedy: one sample per problem
        from .sandbox import isolation
        record["sandbox"] = isolation()
    if ev.kind == "choice":
        record["choice_scoring"] = choice_scoring
        if choice_scoring == "loglik":
            record["score_norm"] = sum(e["correct_norm"] for e in examples) / n if n else float("nan")
    return record
