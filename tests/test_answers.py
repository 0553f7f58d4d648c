import pytest

from ordermerge.evaluate.math_answers import extract_gsm8k, normalize_number, numbers_equal

CASES = [
    # output, extracted, rule
    ("3 + 4 = 7.\n#### 7", "7", "####"),
    ("#### 1,234", "1,234", "####"),
    ("first #### 5 then #### 6", "6", "####"),
    ("####-3", "-3", "####"),
    ("#### $12.50", "$12.50", "####"),
    ("####  3/4", "3/4", "####"),
    ("So the answer is 42.", "42", "answer-is"),
    ("The answer is: $1,000", "$1,000", "answer-is"),
    ("The Answer Is -2.5", "-2.5", "answer-is"),
    ("He has 3 apples and 5 pens, 8 in all", "8", "last-number"),
    ("no number here", None, "none"),
    ("", None, "none"),
    ("12 - 5 = 7. 7 * 2 = 14.", "14", "last-number"),
    ("The answer is 5. #### 6", "6", "####"),
]


@pytest.mark.parametrize("output,expected,rule", CASES)
def test_extract(output, expected, rule):
    assert extract_gsm8k(output) == (expected, rule)


@pytest.mark.parametrize("pred,gold,ok", [
    ("1,234", "1234", True), ("$12.50", "12.5", True), ("3/4", "0.75", True),
    ("-3", "3", False), ("7.", "7", True), ("7.0000001", "7", True), ("7.01", "7", False),
    (None, "7", False), ("abc", "7", False), ("1/0", "7", False), ("+5", "5", True),
])
def test_numbers_equal(pred, gold, ok):
    assert numbers_equal(pred, gold) is ok


def test_normalize():
    assert normalize_number("1,000,000") == 1_000_000
    assert normalize_number("- $ 3") == -3
    assert normalize_number("-$3") == -3
