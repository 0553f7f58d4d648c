"""The tiny suite's general benchmarks (config/lm_eval/tiny/, Table 5): rows in the
vocabulary of the tiny base's pretraining corpus (toy.plain_text), written once into the task
files; tests/test_general.py checks that the files are what `general_items` writes. A module
of its own: the tiny tasks' data code (toy.py) is an input of every data job."""
from __future__ import annotations

import random

from .toy import ITEMS, NAMES, _facts


def general_items(n: int, seed: int) -> dict[str, list[dict]]:
    """The tiny suite's two general benchmarks, in lm-evaluation-harness's format
    (config/lm_eval/tiny/): what the tiny base learnt in pretraining (``toy.plain_text``) and
    fine-tuning on a task may cost.

    - ``tiny_facts`` (multiple choice, scored by log-likelihood): a story sentence up to its
      sum, ``Tom has 3 pens and gets 4. That is 3 + 4 =``, and four numbers to continue it:
      the answer and three others within 3 of it, in a random order (``label``: the answer's
      index).
    - ``tiny_sums`` (generation): a bare fact up to its result, ``7 - 3 =``; the first number
      of the greedy continuation must be the result (``answer``).
    """
    rng = random.Random(seed)
    facts, sums = [], []
    for i in range(n):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        op, a, b, c = _facts(rng)
        if op == "*":
            question = f"{name} has {a} boxes of {b} {item}. That is {a} * {b} ="
        else:
            verb = "gets" if op == "+" else "gives away"
            question = f"{name} has {a} {item} and {verb} {b}. That is {a} {op} {b} ="
        others = rng.sample([v for v in range(max(0, c - 3), c + 4) if v != c], 3)
        choices = [c] + others
        rng.shuffle(choices)
        facts.append({"id": i, "question": question, "choices": [str(v) for v in choices],
                      "label": choices.index(c)})
        op, a, b, c = _facts(rng)
        sums.append({"id": i, "question": f"{a} {op} {b} =", "answer": str(c)})
    return {"tiny_facts": facts, "tiny_sums": sums}
