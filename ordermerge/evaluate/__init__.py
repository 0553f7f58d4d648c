"""Evaluators: how a model's answer to a test row is obtained and compared with the gold.

`kind` says how the answer is obtained: "generate" (greedy generation, then
`extract` and `correct`), "choice" (one of the task's options: by option
log-likelihood or by generating and matching, per config
`evaluate.choice_scoring`). Encoder tasks (`encoder_classification`,
`encoder_span`) are scored by their heads in encoder_eval.py. Evaluators not
built yet would be named in `PENDING` with where they come
from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import humaneval, math_answers, math_latex, text_answers


@dataclass(frozen=True)
class Evaluator:
    name: str
    kind: str  # "generate" | "choice" | "code" | "pairwise"
    extract: Callable[[str], tuple[object, str]] | None = None
    correct: Callable[[object, object], bool] | None = None
    stop: tuple[str, ...] = ()


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
}

# evaluators that the registry names but this module does not provide yet
PENDING: dict[str, str] = {}


def get_evaluator(name: str) -> Evaluator:
    if name in PENDING:
        raise NotImplementedError(f"evaluator {name!r} is not available yet: {PENDING[name]}")
    try:
        return EVALUATORS[name]
    except KeyError:
        raise KeyError(f"unknown evaluator {name!r}; known: {sorted(EVALUATORS)}") from None
