"""SQuAD exact match and matching a generated output to a fixed set of options.

SQuAD (v1.1's official normalisation): lowercase, drop punctuation, drop the
articles a / an / the, collapse whitespace; exact match is the maximum over the
gold answers.

Generate-and-match (classification and multiple choice by generation): the
output's first line, normalised as above, is compared with each option; an
exact match wins, else the single option that occurs in it as whole words (an
option contained in a longer option that also occurs counts as the longer
one). Anything else, including two options that both occur, is no answer.
"""
from __future__ import annotations

import re
import string

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def squad_exact_match(pred: str | None, golds: list[str]) -> bool:
    if pred is None:
        return False
    p = normalize_answer(pred)
    return any(p == normalize_answer(g) for g in golds)


def squad_f1(pred: str | None, golds: list[str]) -> float:
    """Token F1, maximum over the gold answers (reported beside exact match)."""
    if pred is None:
        return 0.0
    best = 0.0
    p = normalize_answer(pred).split()
    for g in golds:
        t = normalize_answer(g).split()
        common = sum(min(p.count(w), t.count(w)) for w in set(p))
        if not p or not t:
            f1 = float(p == t)
        elif common == 0:
            f1 = 0.0
        else:
            prec, rec = common / len(p), common / len(t)
            f1 = 2 * prec * rec / (prec + rec)
        best = max(best, f1)
    return best


def extract_first_line(output: str) -> tuple[str | None, str]:
    line = output.strip().split("\n")[0].strip()
    return (line or None), "first-line"


def match_option(output: str | None, options: list[str]) -> int | None:
    """The index of the option `output` names (see the module docstring), or None."""
    if output is None:
        return None
    text = normalize_answer(output.strip().split("\n")[0])
    if not text:
        return None
    norm = [normalize_answer(o) for o in options]
    exact = [i for i, o in enumerate(norm) if o and text == o]
    if len(exact) == 1:
        return exact[0]
    found = [i for i, o in enumerate(norm) if o and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", text)]
    # an option inside a longer option that also occurs is that longer option's words
    found = [i for i in found if not any(j != i and norm[i] in norm[j] for j in found)]
    return found[0] if len(found) == 1 else None
