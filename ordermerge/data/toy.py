"""Deterministic generators of the embedded tiny suite.

`arithmetic_problems` writes rows in GSM8K's schema (``question``, ``answer``
with a worked solution ending in ``#### <number>``): one- and two-step
arithmetic word problems with small numbers, learnable by a ~1M-parameter
model. `plain_text` writes arithmetic facts and story sentences in the same
vocabulary, part of the tiny base's pretraining corpus (see `corpus`).
"""
from __future__ import annotations

import random

NAMES = ["Tom", "Ann", "Sam", "Mia", "Leo", "Eva", "Max", "Zoe", "Ben", "Ivy"]
ITEMS = ["apples", "pens", "books", "coins", "cards", "eggs", "balls", "cups"]


def _facts(rng: random.Random) -> tuple[str, int, int, int]:
    op = rng.choice(["+", "-", "*"])
    if op == "+":
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        return op, a, b, a + b
    if op == "-":
        a = rng.randint(2, 18)
        b = rng.randint(1, a - 1)
        return op, a, b, a - b
    a, b = rng.randint(2, 5), rng.randint(2, 5)
    return op, a, b, a * b


def _one_step(rng: random.Random, name: str, item: str) -> tuple[str, str]:
    op, a, b, c = _facts(rng)
    if op == "+":
        q = f"{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?"
    elif op == "-":
        q = f"{name} has {a} {item}. {name} gives away {b}. How many {item} are left?"
    else:
        q = f"{name} has {a} boxes with {b} {item} in each box. How many {item} does {name} have?"
    return q, f"{a} {op} {b} = {c}.\n#### {c}"


def _two_step(rng: random.Random, name: str, item: str) -> tuple[str, str]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    s = a + b
    c = rng.randint(1, s - 1)
    q = (f"{name} has {a} {item}. {name} gets {b} more, then gives away {c}. "
         f"How many {item} does {name} have now?")
    return q, f"{a} + {b} = {s}. {s} - {c} = {s - c}.\n#### {s - c}"


def arithmetic_problems(n: int, seed: int, two_step_rate: float = 0.3) -> list[dict]:
    """`n` GSM8K-schema rows; the same (n, seed) always gives the same rows."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        make = _two_step if rng.random() < two_step_rate else _one_step
        question, answer = make(rng, name, item)
        rows.append({"question": question, "answer": answer})
    return rows


def plain_text(n_lines: int, seed: int) -> list[str]:
    """Arithmetic facts and story sentences in the suite's vocabulary, one per line."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        op, a, b, c = _facts(rng)
        if rng.random() < 0.5:
            lines.append(f"{a} {op} {b} = {c}.")
        elif op == "*":
            lines.append(f"{name} has {a} boxes of {b} {item}. That is {a} * {b} = {c} {item}.")
        else:
            verb = "gets" if op == "+" else "gives away"
            lines.append(f"{name} has {a} {item} and {verb} {b}. That is {a} {op} {b} = {c} {item}.")
    return lines
