"""Evaluation of one model on one task's test rows; every example is kept.

`evaluate_rows` runs the task's evaluator handler (handlers.py) and builds the record;
`evaluate_model` is an evaluate job's work per model: load the checkpoint as its task
needs, evaluate, and label the record with what was evaluated. A job that evaluates
several models (the K sub-models, or every seed of one merge method) sets up the
AlpacaEval judge once (`load_judge`) and pays the imports once.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..utils import InputError
from . import get_evaluator
from .handlers import generates, mean
from .settings import scoring_settings

PAPER_JUDGE = "alpaca_eval_gpt4"  # the paper's AlpacaEval annotator


def evaluate_rows(model, tokenizer, task, rows: list[dict], *, max_new_tokens: int | None = None,
                  batch_size: int, choice_scoring: str = "loglik", judge=None,
                  annotators_config: str = PAPER_JUDGE, name: str = "model",
                  max_length: int | None = None, generator=None) -> dict:
    """Score `rows`; the record lists every example: id, prompt, output, extracted answer,
    gold and whether it is correct (and, for log-likelihood scoring, every option's).
    `generator`: a backend's (backends.py: (prompts, max_new_tokens=, stop=) -> completions,
    with its `info`); None: transformers' generate on `model`. The record's `generation`
    names the backend and versions that generated its outputs (None where nothing was
    generated)."""
    ev = get_evaluator(task.evaluator)
    if model is not None:
        model.eval()
    if generator is None and generates(ev, choice_scoring):  # transformers on `model`
        from .backends import HFGenerator
        generator = HFGenerator(model, tokenizer, batch_size)
    settings = {"max_new_tokens": max_new_tokens, "batch_size": batch_size,
                "choice_scoring": choice_scoring, "judge": judge, "generator": generator,
                "annotators_config": annotators_config, "name": name, "max_length": max_length}
    examples, extra = ev.handler(model, tokenizer, task, ev, rows, settings)
    generation = generator.info() if generator is not None else None
    return {"task": task.name, "evaluator": ev.name, "metric": task.metric,
            "score": mean([e["correct"] for e in examples]), "n": len(examples),
            "generation": generation, "examples": examples, **extra}


def load_judge(task, cfg: dict, judge_model: str | os.PathLike | None = None):
    """(judge, annotators config) of a task's evaluation: the local AlpacaEval judge's model
    loaded once, or the annotator after a check that it can run; (None, ...) for tasks that
    are not judged pairwise. Refuses a code task without the config's opt-in."""
    import torch
    kind = get_evaluator(task.evaluator).kind
    if kind == "code" and not cfg.get("allow_code_execution"):
        raise InputError(f"evaluate {task.name}: its evaluator runs the model's completions as "
                         f"Python; set tasks.{task.name}.evaluate.allow_code_execution: true")
    judge, annotators = None, cfg.get("judge") or PAPER_JUDGE
    if kind == "pairwise":
        from .alpaca import check_judge, lm_judge
        if annotators == "local":
            if judge_model is None:
                raise InputError("evaluate: the local AlpacaEval judge needs --judge-model")
            from ..models import load_model
            judge, annotators = lm_judge(*load_model(judge_model, dtype=torch.float32)), PAPER_JUDGE
        else:
            check_judge(annotators)  # before any generation work
    return judge, annotators


def evaluate_model(task, model_path: str | os.PathLike | list, rows: list[dict], cfg: dict,
                   judge_model: str | os.PathLike | None = None, *, name: str | None = None,
                   judge: tuple | None = None, sessions=None) -> dict:
    """The evaluate rule's record of the checkpoint `model_path` on `rows`, with the rule's
    params `cfg` (the task's `evaluate` section plus kind, epoch, scheme, model, the train
    max_length, and the candidate's name unless `name` gives it). `judge`: what
    `load_judge` gave, for a job that evaluates several models with one judge. A list of
    checkpoints is their ensemble (evaluate/ensemble.py: the averaged distributions; the
    transformers backend). Decoders
    generate in bf16 on a GPU, in float32 on the CPU. Generating evaluators generate through
    cfg's backend (backends.py), in `sessions` (the job's backends.Sessions; one of its own
    where None); a backend that loads the weights itself (vLLM) has only the tokenizer
    loaded here."""
    import torch

    from ..checkpoints import load_for_task, tokenizer_of
    from ..merge.lora_runs import folded
    from .backends import Sessions, get_backend
    judge, annotators = judge or load_judge(task, cfg, judge_model)
    name = cfg["name"] if name is None else name
    scoring = cfg.get("choice_scoring", "loglik")
    generating = generates(get_evaluator(task.evaluator), scoring)
    backend = get_backend(cfg.get("backend", "hf"))
    ensemble = isinstance(model_path, (list, tuple))
    paths = list(model_path) if ensemble else [model_path]
    if ensemble and backend.name != "hf":
        raise InputError(f"evaluate {task.name}: the ensemble of the runs is evaluated with "
                         f"transformers (backend hf), not {backend.name}")
    # a LoRA run: both backends read its update folded into the base (lora_runs.folded)
    with contextlib.ExitStack() as stack:
        denses = [stack.enter_context(folded(p)) for p in paths]
        dense = denses[0]
        if generating and not backend.loads_model:
            model, tokenizer = None, tokenizer_of(dense)
        else:
            models = []
            for d in denses:
                m, tokenizer = load_for_task(task, d)
                if task.family == "decoder" and torch.cuda.is_available():
                    m = m.to("cuda", torch.bfloat16)
                models.append(m)
            if ensemble:  # evaluate/ensemble.py: the runs' averaged distributions
                from .ensemble import Ensemble
                _same_tokenizers(denses)
                model = Ensemble(models)
            else:
                model = models[0]
        with contextlib.nullcontext(sessions) if sessions is not None else Sessions() as held:
            generator = (held[backend.name].generator(dense, model, tokenizer, rows, cfg)
                         if generating else None)
            record = evaluate_rows(model, tokenizer, task, rows,
                                   max_new_tokens=cfg.get("max_new_tokens"),
                                   batch_size=cfg["batch_size"], choice_scoring=scoring,
                                   judge=judge, annotators_config=annotators, generator=generator,
                                   name=f"{cfg['kind']}-{name}", max_length=cfg.get("max_length"))
    record.update({k: cfg[k] for k in ("kind", "epoch", "scheme", "model")}, name=name,
                  model_path=[str(p) for p in paths] if ensemble else str(model_path),
                  settings=scoring_settings(cfg))
    return record


def _same_tokenizers(dirs: list) -> None:
    """The runs of an ensemble share one vocabulary: their tokenizer files are the same."""
    from ..provenance import file_hashes
    names = [f for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
             if (Path(dirs[0]) / f).is_file()]
    ref = file_hashes(dirs[0], names)
    for d in dirs[1:]:
        if file_hashes(d, names) != ref:
            raise InputError(f"evaluate: the ensemble's runs {dirs[0]} and {d} have different "
                             "tokenizer files: their distributions cannot be averaged")


def evaluation_jobs(tasks: list[str], tests: list, candidates: list, params: dict):
    """What one evaluation job does, per task: (task, test path, its rows, its params, its
    candidates (name, model, record path)). One task: every candidate on it with `params`.
    Several (a multi-task merge on each task of its group): the i-th candidate on the i-th
    task, with `params["tasks"][task]`. InputError names what does not line up."""
    from ..data.registry import get_task
    from ..utils import read_jsonl
    if len(tests) != len(tasks):
        raise InputError(f"evaluate: {len(tasks)} --task but {len(tests)} --test (one each)")
    if len(tasks) == 1:
        per_task = [(tasks[0], tests[0], params, candidates)]
    else:
        if len(candidates) != len(tasks) or set(params.get("tasks") or {}) != set(tasks):
            raise InputError(f"evaluate: {len(tasks)} tasks need one --candidate each and "
                             f"--params {{\"tasks\": {{task: params}}}} for exactly {tasks}")
        per_task = [(t, f, params["tasks"][t], [c]) for t, f, c in zip(tasks, tests, candidates)]
    for name, test, cfg, cands in per_task:
        yield get_task(name), test, read_jsonl(test), cfg, cands


def write_evaluation(path: str | os.PathLike, record: dict) -> None:
    """The record as the evaluate rule writes it (indent 1, sorted keys), atomically."""
    from ..utils import atomic_file
    with atomic_file(Path(path)) as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
