"""Answer extraction for GSM8K-style outputs, and numeric comparison.

Order of preference: the number after the last ``####``; the number after
the last "The answer is"; the last number in the text. Numbers may carry
commas as thousands separators, a sign, a leading ``$``, decimals, a
trailing period, or be a simple fraction ``a/b``.
"""
from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = r"[-+]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?"
_NUM_RE = re.compile(_NUMBER)
_HASH_RE = re.compile(r"####\s*(" + _NUMBER + ")")
_ANSWER_IS_RE = re.compile(r"answer is[:\s]*(" + _NUMBER + ")", re.IGNORECASE)


def normalize_number(text: str) -> Fraction | None:
    """'1,234.50' -> 1234.5, '-$3' -> -3, '3/4' -> 3/4; None when not a number."""
    s = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        if "/" in s:
            num, den = s.split("/")
            return Fraction(num) / Fraction(den)
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def extract_gsm8k(output: str) -> tuple[str | None, str]:
    """The predicted answer string and the rule that found it."""
    hashes = _HASH_RE.findall(output)
    if hashes:
        return hashes[-1].strip(), "####"
    stated = _ANSWER_IS_RE.findall(output)
    if stated:
        return stated[-1].strip(), "answer-is"
    numbers = _NUM_RE.findall(output)
    if numbers:
        return numbers[-1].strip(), "last-number"
    return None, "none"


def numbers_equal(pred: str | None, gold: str, tol: float = 1e-6) -> bool:
    if pred is None:
        return False
    a, b = normalize_number(pred), normalize_number(gold)
    if a is None or b is None:
        return False
    return abs(float(a) - float(b)) <= tol * max(1.0, abs(float(b)))
