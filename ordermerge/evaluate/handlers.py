"""One handler per evaluator kind: how a model answers a task's test rows.

A handler takes (model, tokenizer, task, evaluator, rows, settings) and returns the
examples (built by `example`, one per row, in row order) and the record's extra fields
(which may replace the default score, the mean of the examples' `correct`). Heavy
imports stay inside the handlers, so that reading the evaluator table is cheap.
"""
from __future__ import annotations


def example(row: dict, prompt: str, output, extracted, extraction: str, gold, correct,
            **extra) -> dict:
    """The record of one test row: what the model said, what was read from it, the gold."""
    return {"id": row["id"], "prompt": prompt, "output": output, "extracted": extracted,
            "extraction": extraction, "gold": gold, "correct": correct, **extra}


def mean(values: list) -> float:
    return sum(values) / len(values) if values else float("nan")


def generates(ev, choice_scoring: str = "loglik") -> bool:
    """Whether evaluator `ev`'s records hold generated outputs (the others score with
    log-likelihoods or an encoder's head, always through transformers)."""
    return ev.kind in ("generate", "code", "pairwise") or (ev.kind == "choice"
                                                           and choice_scoring == "generate")


def _generations(model, tokenizer, ev, prompts, s) -> list[str]:
    """Greedy completions by the evaluation's generator (backends.py)."""
    if s["max_new_tokens"] is None:
        raise ValueError(f"evaluator {ev.name!r} generates: max_new_tokens is needed")
    return s["generator"](prompts, max_new_tokens=s["max_new_tokens"], stop=list(ev.stop))


def generate(model, tokenizer, task, ev, rows, s):
    """Greedy generation, then the evaluator's `extract` and `correct`."""
    prompts = [task.prompt(r) for r in rows]
    out = []
    for row, prompt, output in zip(rows, prompts, _generations(model, tokenizer, ev, prompts, s)):
        pred, rule = ev.extract(output)
        gold = task.gold(row)
        out.append(example(row, prompt, output, pred, rule, gold, ev.correct(pred, gold)))
    return out, {}


def choice(model, tokenizer, task, ev, rows, s):
    """One of the task's options: by option log-likelihood, or by generating and matching."""
    prompts = [task.prompt(r) for r in rows]
    options = [task.options(r) for r in rows]
    scoring = s["choice_scoring"]
    out = []
    if scoring == "loglik":
        from .choice import option_logliks
        scores = option_logliks(model, tokenizer, prompts, options, batch_size=s["batch_size"])
        for row, prompt, opts, sc in zip(rows, prompts, options, scores):
            pick = max(range(len(opts)), key=lambda k: sc[k])
            norm = max(range(len(opts)), key=lambda k: sc[k] / max(len(opts[k]), 1))
            gold = task.gold(row)
            out.append(example(row, prompt, opts[pick], pick, "loglik", gold, pick == gold,
                               options=opts, logliks=sc, correct_norm=norm == gold))
        return out, {"choice_scoring": scoring,
                     "score_norm": mean([e["correct_norm"] for e in out])}
    if scoring == "generate":
        from .text_answers import match_option
        outputs = _generations(model, tokenizer, ev, prompts, s)
        for row, prompt, opts, output in zip(rows, prompts, options, outputs):
            pick = match_option(output, opts)
            gold = task.gold(row)
            out.append(example(row, prompt, output, pick, "generate-match", gold, pick == gold,
                               options=opts))
        return out, {"choice_scoring": scoring}
    raise ValueError(f"choice_scoring {scoring!r}: loglik or generate")


def code(model, tokenizer, task, ev, rows, s):
    """Completions run against each problem's tests in the sandbox (pass@1 of greedy)."""
    from .humaneval import check
    from .sandbox import isolation
    prompts = [task.prompt(r) for r in rows]
    outputs = _generations(model, tokenizer, ev, prompts, s)
    out = [example(row, prompt, output, output, "completion", task.gold(row), res["passed"],
                   execution=res)
           for row, prompt, output, res in zip(rows, prompts, outputs, check(rows, outputs))]
    score = mean([e["correct"] for e in out])
    return out, {"pass@1": score, "sandbox": isolation()}


def pairwise(model, tokenizer, task, ev, rows, s):
    """Generations judged against the references through alpaca_eval: the win rate."""
    from .alpaca import win_rate
    prompts = [task.prompt(r) for r in rows]
    outputs = _generations(model, tokenizer, ev, prompts, s)
    ours = [{"instruction": r["instruction"], "output": o, "generator": s["name"]}
            for r, o in zip(rows, outputs)]
    refs = [{"instruction": r["instruction"], "output": r["output"],
             "generator": r.get("generator", "reference")} for r in rows]
    config, judge = s["annotators_config"], s["judge"]
    rate, annotations = win_rate(ours, refs, annotators_config=config, judge=judge, name=s["name"])
    by_instruction = {a["instruction"]: a for a in annotations}
    out = []
    for row, prompt, output in zip(rows, prompts, outputs):
        a = by_instruction[row["instruction"]]
        pref = a.get("preference")  # 2: ours preferred, 1: the reference, 1.5: a tie
        out.append(example(row, prompt, output, output, "generation", task.gold(row),
                           None if pref is None else (pref - 1.0),
                           judgment={k: (v if isinstance(v, (str, int, float, type(None))) else str(v))
                                     for k, v in a.items()}))
    return out, {"score": rate / 100.0, "win_rate": rate,
                 "judge": config if judge is None else f"local ({config} prompt)"}


def classification(model, tokenizer, task, ev, rows, s):
    """An encoder's classification head: the argmax of its logits against the label."""
    import torch

    from ..objectives import encoder_forward, objective_for
    obj, labels, out = objective_for(task, tokenizer, s["max_length"]), task.options({}), []
    with torch.no_grad():
        for b in range(0, len(rows), s["batch_size"]):
            chunk = rows[b:b + s["batch_size"]]
            batch = obj.collate([obj.encode(r) for r in chunk])
            logits = encoder_forward(model, batch).logits
            for row, lg in zip(chunk, logits):
                pick, gold = int(lg.argmax()), task.gold(row)
                out.append(example(row, task.prompt(row), labels[pick], pick, "argmax", gold,
                                   pick == gold, logits=[float(x) for x in lg]))
    return out, {}


def span(model, tokenizer, task, ev, rows, s):
    """An encoder's span head: the best context span (start <= end, at most 30 tokens),
    by SQuAD exact match, with F1 beside it."""
    import torch

    from ..objectives import encoder_forward, objective_for
    from .text_answers import squad_exact_match, squad_f1
    obj, out = objective_for(task, tokenizer, s["max_length"]), []
    feats = [obj.features(r) for r in rows]
    with torch.no_grad():
        for b in range(0, len(rows), s["batch_size"]):
            chunk = feats[b:b + s["batch_size"]]
            batch = obj.collate([{**f, "start": 0, "end": 0} for f in chunk])
            res = encoder_forward(model, batch)
            for k, (row, f) in enumerate(zip(rows[b:b + s["batch_size"]], chunk)):
                pred = obj.best_span(res.start_logits[k], res.end_logits[k], f["offsets"],
                                     row["context"])
                gold = task.gold(row)
                out.append(example(row, task.prompt(row), pred, pred, "best-span", gold,
                                   squad_exact_match(pred, gold), f1=squad_f1(pred, gold)))
    return out, {"f1": mean([e["f1"] for e in out])}
