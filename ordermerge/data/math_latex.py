"""MATH answers: extraction from solutions and outputs, and Hendrycks-style equivalence. A
data format as much as a metric: a MATH row's gold answer is read from its solution by the
same extraction that reads a model's output, so tasks.py and the evaluator share this module.

Extraction: the last ``\\boxed{...}`` (braces balanced; also ``\\boxed 5`` and
``\\fbox{...}``), else the text after the last "The answer is" (MetaMathQA's
responses end with "The answer is: X"), else nothing.

Equivalence follows the normalisation of Hendrycks et al. (2021): drop line
breaks, ``\\!``, ``\\left``/``\\right``, degrees, dollars, ``\\%``, trailing
``\\text{ units}``; ``tfrac``/``dfrac`` -> ``frac``; a leading ``x =`` of a
short variable; ``\\sqrt3`` -> ``\\sqrt{3}``; spaces; ``\\frac12`` ->
``\\frac{1}{2}``; ``0.5`` -> ``\\frac{1}{2}``; ``a/b`` -> ``\\frac{a}{b}``; then
string equality. On top of that, two answers that both read as rational
numbers (integers, decimals, ``\\frac{a}{b}``, ``a/b``, with commas or signs)
are compared as numbers.
"""
from __future__ import annotations

import re
from fractions import Fraction

def _balanced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at text[start] == '{', and its end index."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...} / \\boxed x in `text`."""
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)", text):
        rest = m.end()
        if rest < len(text) and text[rest] == "{":
            group = _balanced(text, rest)
            if group is not None:
                best = group[0]
        elif text[rest:rest + 1] == " ":
            token = re.match(r" +([^\s$]+)", text[rest:])
            if token:
                best = token.group(1)
    return best


def extract_math(output: str) -> tuple[str | None, str]:
    """The predicted answer and the rule that found it."""
    boxed = last_boxed(output)
    if boxed is not None:
        return boxed.strip(), "boxed"
    at = output.lower().rfind("answer is")
    if at >= 0:
        answer = output[at + len("answer is"):].lstrip().removeprefix(":")
        answer = answer.split("\n")[0].strip()
        answer = answer.strip().rstrip(".").strip()
        if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
            answer = answer[1:-1].strip()
        return (answer or None), "answer-is"
    return None, "none"


def _fix_fracs(s: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{72} -> \\frac{1}{72}, \\frac{1}2 -> \\frac{1}{2}."""
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{"):
            group = _balanced(part, 0)
            if group is None:
                return s
            num, end = group
            rest = part[end:]
            if rest.startswith("{") or not rest:
                out += part
            else:
                out += "{" + num + "}{" + rest[0] + "}" + rest[1:]
        else:
            if len(part) < 2:
                return s
            a, b = part[0], part[1]
            if b == "{":
                out += "{" + a + "}" + part[1:]
            else:
                out += "{" + a + "}{" + b + "}" + part[2:]
    return out


def _fix_a_slash_b(s: str) -> str:
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    return f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}" if m else s


def _fix_sqrt(s: str) -> str:
    return re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)


def strip_math(s: str) -> str:
    """The normalised form of a MATH answer (see the module docstring)."""
    s = s.replace("\n", "").replace("\\!", "")
    s = s.replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    if "\\text{ " in s:  # trailing units: "5 \text{ cm}"
        s = s.split("\\text{ ")[0]
    s = re.sub(r"\\(?:text|textbf|mbox)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    halves = s.split("=")
    if len(halves) == 2 and len(halves[0].strip()) <= 2:
        s = halves[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    s = _fix_a_slash_b(s)
    s = s.rstrip(".")
    return s


def _as_number(s: str) -> Fraction | None:
    t = s.replace(",", "").replace("{,}", "")
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", t)
    try:
        if m:
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) else value
        if re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)", t):
            return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def math_equal(pred: str | None, gold: str) -> bool:
    if pred is None:
        return False
    a, b = strip_math(pred), strip_math(gold)
    if a == b:
        return True
    x, y = _as_number(a), _as_number(b)
    return x is not None and x == y


def math_gold(solution: str) -> str:
    """The gold answer of a MATH solution or a MetaMathQA response."""
    answer, _ = extract_math(solution)
    if answer is None:
        raise ValueError("no \\boxed{} answer and no 'The answer is' in the solution")
    return answer
