"""Evaluators: how a model's answer to a test row is obtained and compared with the gold.

An evaluator's `kind` names its handler (handlers.py), which answers the rows:
"generate" (greedy generation, then `extract` and `correct`), "choice" (one of
the task's options, by option log-likelihood or by generating and matching, per
config `evaluate.choice_scoring`), "code" (completions run against tests),
"pairwise" (an AlpacaEval judge against references), and "classification" and
"span" (an encoder's head). run.py builds the record around the handler's examples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..data import math_latex
from . import handlers, humaneval, math_answers, text_answers


@dataclass(frozen=True)
class Evaluator:
    name: str
    kind: str  # a handler of handlers.py
    extract: Callable[[str], tuple[object, str]] | None = None
    correct: Callable[[object, object], bool] | None = None
    stop: tuple[str, ...] = ()

    @property
    def handler(self) -> Callable:
        return getattr(handlers, self.kind)


EVALUATORS = {
    "gsm8k": Evaluator("gsm8k", "generate", math_answers.extract_gsm8k, math_answers.numbers_equal,
                       stop=("\nQuestion:",)),
    "math": Evaluator("math", "generate", math_latex.extract_math, math_latex.math_equal,
                      stop=("\nQuestion:",)),
    "squad": Evaluator("squad", "generate", text_answers.extract_first_line,
                       text_answers.squad_exact_match, stop=("\n",)),
    "choice": Evaluator("choice", "choice", stop=("\n",)),
    # completions run against the problem's tests in the sandbox (humaneval.py)
    "humaneval": Evaluator("humaneval", "code", stop=humaneval.STOP),
    # generated outputs against the references, judged through alpaca_eval (alpaca.py)
    "alpaca_eval": Evaluator("alpaca_eval", "pairwise"),
    # encoder tasks, scored by their heads
    "encoder_classification": Evaluator("encoder_classification", "classification"),
    "encoder_span": Evaluator("encoder_span", "span"),
}


def get_evaluator(name: str) -> Evaluator:
    try:
        return EVALUATORS[name]
    except KeyError:
        raise KeyError(f"unknown evaluator {name!r}; known: {sorted(EVALUATORS)}") from None
