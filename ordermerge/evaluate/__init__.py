"""Evaluators: each names how an answer is extracted from an output and compared to gold."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import math_answers


@dataclass(frozen=True)
class Evaluator:
    name: str
    extract: Callable[[str], tuple[str | None, str]]
    correct: Callable[[str | None, str], bool]
    stop: tuple[str, ...] = ()


EVALUATORS = {
    "gsm8k": Evaluator("gsm8k", math_answers.extract_gsm8k, math_answers.numbers_equal,
                       stop=("\nQuestion:",)),
}


def get_evaluator(name: str) -> Evaluator:
    try:
        return EVALUATORS[name]
    except KeyError:
        raise KeyError(f"unknown evaluator {name!r}; known: {sorted(EVALUATORS)}") from None
