"""Scorers on tricky strings: MATH, SQuAD, option matching, and more GSM8K."""
import pytest

from ordermerge.evaluate.math_answers import extract_gsm8k, numbers_equal
from ordermerge.data.math_latex import extract_math, last_boxed, math_equal, math_gold, strip_math
from ordermerge.evaluate.text_answers import match_option, normalize_answer, squad_exact_match, squad_f1

MATH_EXTRACT = [
    ("so $x = \\boxed{5}$.", "5", "boxed"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "boxed"),
    ("first \\boxed{1} then \\boxed{2}", "2", "boxed"),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "boxed"),
    ("\\boxed{(1, \\{2\\})}", "(1, \\{2\\})", "boxed"),
    ("\\boxed 7$", "7", "boxed"),
    ("\\fbox{12}", "12", "boxed"),
    ("\\boxed{x^{2}+1}", "x^{2}+1", "boxed"),
    ("The answer is: 42", "42", "answer-is"),
    ("The answer is: \\frac{3}{4}\n", "\\frac{3}{4}", "answer-is"),
    ("the answer is $-3$.", "-3", "answer-is"),
    ("The answer is 10. The answer is: 11", "11", "answer-is"),
    ("no answer here", None, "none"),
    ("\\boxed{unbalanced", None, "none"),
    ("", None, "none"),
    ("The answer is \\boxed{9}", "9", "boxed"),
]


@pytest.mark.parametrize("output,answer,rule", MATH_EXTRACT)
def test_math_extraction(output, answer, rule):
    assert extract_math(output) == (answer, rule)


MATH_EQUAL = [
    ("\\frac{1}{2}", "0.5", True),
    ("\\dfrac{1}{2}", "\\frac12", True),
    ("\\tfrac{3}{4}", "3/4", True),
    ("\\frac{3}{4}", "0.75", True),
    ("\\left( 1, 2 \\right)", "(1,2)", True),
    ("90^\\circ", "90", True),
    ("90^{\\circ}", "90", True),
    ("\\$5", "5", True),
    ("5 \\text{ cm}", "5", True),
    ("50\\%", "50", True),
    ("x = 3", "3", True),
    ("y=-2", "-2", True),
    ("\\sqrt3", "\\sqrt{3}", True),
    ("2\\sqrt2", "2\\sqrt{2}", True),
    (".5", "\\frac{1}{2}", True),
    ("1,000", "1000", True),
    ("10.0", "10", True),
    ("-\\frac{2}{4}", "-0.5", True),
    ("\\frac{6}{4}", "\\frac32", True),
    ("\\text{(A)}", "(A)", True),
    ("3 \\!", "3", True),
    ("5.", "5", True),
    ("\\frac{1}{3}", "0.33", False),
    ("2", "3", False),
    ("\\sqrt{2}", "\\sqrt{3}", False),
    ("x^2", "x^3", False),
    ("(1,2)", "(2,1)", False),
    (None, "5", False),
    ("\\frac{a}{b}", "\\frac{a}{b}", True),
    ("\\infty", "\\infty", True),
    ("10^{10}", "10^{10}", True),
    ("abc = 5", "5", False),  # a long left-hand side is not a variable name
]


@pytest.mark.parametrize("pred,gold,ok", MATH_EQUAL)
def test_math_equivalence(pred, gold, ok):
    assert math_equal(pred, gold) is ok


def test_math_gold_and_strip():
    assert math_gold("We get $\\boxed{\\dfrac{7}{2}}$.") == "\\dfrac{7}{2}"
    assert math_gold("So 3 + 4 = 7.\nThe answer is: 7") == "7"
    with pytest.raises(ValueError, match="no \\\\boxed"):
        math_gold("nothing")
    assert strip_math("\\frac1{72}") == "\\frac{1}{72}"
    assert last_boxed("a \\boxed{1} b \\boxed{{2}}") == "{2}"


SQUAD = [
    ("the Eiffel Tower", ["Eiffel Tower"], True),
    ("The  Eiffel   Tower.", ["Eiffel Tower"], True),
    ("an apple", ["apple"], True),
    ("A", ["a"], True),  # an article alone normalises to the empty string on both sides
    ("Paris!", ["paris"], True),
    ("paris, france", ["Paris France"], True),
    ("1,000", ["1000"], True),
    ("Denver Broncos", ["Broncos", "Denver Broncos"], True),
    ("Broncos", ["Denver Broncos"], False),
    ("the the cat", ["cat"], True),
    ("theatre", ["atre"], False),
    ("there", ["re"], False),
    ("anthem", ["them"], False),
    ("Saint-Denis", ["SaintDenis"], True),
    ("O'Neil", ["ONeil"], True),
    ("(1990)", ["1990"], True),
    ("in 1990", ["1990"], False),
    ("", ["x"], False),
    (None, ["x"], False),
    ("New York City", ["new york city"], True),
    ("new york", ["New York City"], False),
    ("\tTab\n", ["tab"], True),
    ("THE END", ["end"], True),
    ("Ã©", ["Ã©"], True),
    ("café", ["cafe"], False),
    ("3.5", ["35"], True),  # punctuation is removed, as the official script does
    ("a b c", ["b c"], True),
    ("an an", [""], True),
    ("The Beatles", ["Beatles", "the beatles"], True),
    ("Beatle", ["Beatles"], False),
    ("“quoted”", ["quoted"], False),  # curly quotes are not ASCII punctuation
]


@pytest.mark.parametrize("pred,golds,ok", SQUAD)
def test_squad_exact_match(pred, golds, ok):
    assert squad_exact_match(pred, golds) is ok


def test_squad_normalisation_and_f1():
    assert normalize_answer("The Quick, brown fox!") == "quick brown fox"
    assert squad_f1("quick brown fox", ["the quick fox"]) == pytest.approx(0.8)
    assert squad_f1(None, ["x"]) == 0.0


OPTIONS_SENT = ["Negative", "Positive"]
OPTIONS_NLI = ["Yes", "Maybe", "No"]
OPTIONS_NEWS = ["World", "Sports", "Business", "Technology"]
OPTIONS_LONG = ["he went to the store.", "he went to the store and bought milk.", "she slept."]
MATCH = [
    ("Positive", OPTIONS_SENT, 1),
    (" positive.", OPTIONS_SENT, 1),
    ("NEGATIVE", OPTIONS_SENT, 0),
    ("Positive\nQuestion: next", OPTIONS_SENT, 1),
    ("Positive review", OPTIONS_SENT, 1),
    ("It is positive", OPTIONS_SENT, 1),
    ("positive or negative", OPTIONS_SENT, None),
    ("neutral", OPTIONS_SENT, None),
    ("", OPTIONS_SENT, None),
    (None, OPTIONS_SENT, None),
    ("Positively", OPTIONS_SENT, None),
    ("Yes", OPTIONS_NLI, 0),
    ("yes!", OPTIONS_NLI, 0),
    ("No.", OPTIONS_NLI, 2),
    ("Maybe so", OPTIONS_NLI, 1),
    ("Not", OPTIONS_NLI, None),
    ("Nope", OPTIONS_NLI, None),
    ("Yes and no", OPTIONS_NLI, None),  # two options: no answer
    ("I would say maybe", OPTIONS_NLI, 1),
    ("Sports", OPTIONS_NEWS, 1),
    ("Technology.", OPTIONS_NEWS, 3),
    ("Science/Tech", OPTIONS_NEWS, None),
    ("World news", OPTIONS_NEWS, 0),
    ("business", OPTIONS_NEWS, 2),
    ("world sports", OPTIONS_NEWS, None),
    ("He went to the store.", OPTIONS_LONG, 0),
    ("he went to the store and bought milk", OPTIONS_LONG, 1),
    ("He went to the store and then home", OPTIONS_LONG, 0),
    ("She slept", OPTIONS_LONG, 2),
    ("he", OPTIONS_LONG, None),
    ("the store", OPTIONS_LONG, None),
]


@pytest.mark.parametrize("output,options,index", MATCH)
def test_generate_and_match(output, options, index):
    assert match_option(output, options) == index


GSM8K_MORE = [
    ("#### 1,000,000", "1000000", True),
    ("The answer is $ 5", "5", True),
    ("#### 0.50", "0.5", True),
    ("#### -0", "0", True),
    ("#### 7.", "7", True),
    ("Total: 18 dollars. #### 18", "18.0", True),
    ("#### 1/3", "0.3333333", True),  # within the relative tolerance 1e-6
    ("#### 1/3", "0.333", False),
    ("The answer is 2/4", "0.5", True),
    ("It costs 3 dollars each, so 12 in total", "12", True),
    ("#### 12", "13", False),
    ("####", "5", False),
    ("#### 5 apples", "5", True),
    ("The answer is: +8", "8", True),
    ("#### 1e3", "1", True),  # '1e3' is not a number form: the 1 before 'e' is read
    ("1,2,3", "3", True),  # no thousands grouping: three numbers, the last is 3
    ("1,234,5", "5", True),
]


@pytest.mark.parametrize("output,gold,ok", GSM8K_MORE)
def test_gsm8k_more(output, gold, ok):
    pred, _ = extract_gsm8k(output)
    assert numbers_equal(pred, gold) is ok
