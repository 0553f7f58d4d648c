"""AlpacaEval through alpaca_eval.main.evaluate with deterministic judges (offline)."""
import pytest

from ordermerge.evaluate.alpaca import (JudgeUnavailable, check_judge, judge_prompt_outputs,
                                        parse_ranking, ranking, win_rate)

INSTRUCTIONS = [f"Describe item number {i}." for i in range(10)]
OURS = [{"instruction": x, "output": ("GOOD answer" if i < 6 else "bad answer"), "generator": "ours"}
        for i, x in enumerate(INSTRUCTIONS)]
REF = [{"instruction": x, "output": "plain reference", "generator": "reference"} for x in INSTRUCTIONS]


def content_judge(prompt: str) -> str:
    """Prefers an answer that says GOOD; between the others, the reference."""
    a, b = judge_prompt_outputs(prompt)
    if ("GOOD" in a) != ("GOOD" in b):
        return ranking("GOOD" in a)
    return ranking("plain" in a)


def test_content_judge_gives_the_exact_win_rate_whatever_the_order():
    rate, annotations = win_rate(OURS, REF, annotators_config="alpaca_eval_gpt4",
                                 judge=content_judge, name="ours")
    assert rate == pytest.approx(60.0)
    assert len(annotations) == 10
    wins = {a["instruction"]: a["preference"] for a in annotations}
    assert all(wins[x] == (2.0 if i < 6 else 1.0) for i, x in enumerate(INSTRUCTIONS))


def test_outputs_are_shown_in_both_orders_and_mapped_back():
    """A judge that always prefers whatever is shown first: alpaca_eval randomises which
    output comes first, so its win rate is the share of examples where ours was shown first,
    read back from the raw judge completions."""
    rate, annotations = win_rate(OURS, REF, annotators_config="alpaca_eval_gpt4",
                                 judge=lambda p: ranking(True), name="ours")
    shown_first = [a for a in annotations if a["preference"] == 2.0]
    assert all(parse_ranking(a["preference_raw_completion"]) == 1 for a in annotations)
    assert 0 < len(shown_first) < 10  # both orders occur on 10 examples
    assert rate == pytest.approx(100 * len(shown_first) / 10)


def test_gpt4_judge_needs_a_key_before_any_generation(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(JudgeUnavailable, match="OPENAI_API_KEY"):
        check_judge("alpaca_eval_gpt4")
    check_judge("local-lm")  # not an OpenAI judge: nothing to check
