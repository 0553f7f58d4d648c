"""AlpacaEval through alpaca_eval's own `evaluate`, with the judge as configuration.

The paper's judge is `alpaca_eval_gpt4` (AlpacaEval 1, GPT-4; needs
OPENAI_API_KEY, checked before any generation). The tiny suite's judge is
local and offline: any function from a judge prompt to a completion in the
annotator's expected format, plugged in as every annotator's `fn_completions`
by a subclass of alpaca_eval's `PairwiseAnnotator`; the prompt template, the
output-order randomisation (position swapping) and the parsing stay
alpaca_eval's. The metric is `get_winrate` (the length-controlled one needs a
download); alpaca_eval's annotation cache is off (`caching_path=None`: under
pandas 3 it breaks on a second run).
"""
from __future__ import annotations

import ast
import os
import re
from typing import Callable

PAPER_JUDGE = "alpaca_eval_gpt4"


class JudgeUnavailable(RuntimeError):
    pass


def check_judge(annotators_config: str) -> None:
    """The GPT-4 judges need an OpenAI key: fail before any generation work."""
    if "gpt" in annotators_config and not os.environ.get("OPENAI_API_KEY"):
        raise JudgeUnavailable(f"AlpacaEval judge {annotators_config!r} calls the OpenAI API: set "
                               f"OPENAI_API_KEY, or use the local judge (evaluate.judge: local)")


def local_annotator(judge: Callable[[str], str]):
    """A PairwiseAnnotator whose annotators complete prompts with `judge` (offline)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # alpaca_eval imports pkg_resources
        from alpaca_eval.annotators import PairwiseAnnotator

    def completions(prompts, **_):
        out = [judge(p) for p in prompts]
        return {"completions": out, "price_per_example": [0.0] * len(out),
                "time_per_example": [0.0] * len(out)}

    class LocalJudgeAnnotator(PairwiseAnnotator):
        def __init__(self, *args, **kwargs):
            kwargs["caching_path"] = None
            super().__init__(*args, **kwargs)
            for annotator in self.annotators.values():
                annotator.fn_completions = completions

    return LocalJudgeAnnotator


_ANSWER = re.compile(r'"answer": """(.*?)"""', re.S)


def judge_prompt_outputs(prompt: str) -> tuple[str, str]:
    """The two answers in an alpaca_eval_gpt4 judge prompt (model_1's, model_2's)."""
    answers = _ANSWER.findall(prompt)
    if len(answers) != 2:
        raise ValueError("not an alpaca_eval_gpt4 judge prompt (two answers expected)")
    return answers[0], answers[1]


def ranking(first_wins: bool) -> str:
    """A completion in the format alpaca_eval_gpt4's ranking parser reads."""
    ranks = [{"model": "model_1", "rank": 1 if first_wins else 2},
             {"model": "model_2", "rank": 2 if first_wins else 1}]
    return repr(ranks)


def win_rate(model_outputs: list[dict], reference_outputs: list[dict], *, annotators_config: str,
             judge: Callable[[str], str] | None = None, name: str = "model") -> tuple[float, list[dict]]:
    """AlpacaEval win rate (percent) of `model_outputs` over `reference_outputs` (each a dict
    with instruction, output, generator) and the per-example annotations."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from alpaca_eval.main import evaluate
    kwargs = {}
    if judge is not None:
        kwargs["Annotator"] = local_annotator(judge)
    else:
        check_judge(annotators_config)
        kwargs["caching_path"] = None
    leaderboard, annotations = evaluate(
        model_outputs=model_outputs, reference_outputs=reference_outputs,
        annotators_config=annotators_config, name=name, output_path=None,
        is_return_instead_of_print=True, fn_metric="get_winrate", precomputed_leaderboard=None,
        is_cache_leaderboard=False, sort_by="win_rate", **kwargs)
    return float(leaderboard.loc[name, "win_rate"]), annotations


def parse_ranking(completion: str) -> int:
    """1 if model_1 is ranked first, else 2 (for tests and records)."""
    ranks = ast.literal_eval(completion)
    return [r for r in ranks if r["model"] == "model_1"][0]["rank"]


def lm_judge(model, tokenizer, batch_size: int = 2) -> Callable[[str], str]:
    """An offline judge from a local causal LM: of the two rankings ("model_1 first" and
    "model_2 first"), the completion it finds more likely after the judge prompt. Weak
    with a tiny model, but real, deterministic and offline."""
    from .choice import option_logliks
    options = [ranking(True), ranking(False)]

    def judge(prompt: str) -> str:
        scores = option_logliks(model, tokenizer, [prompt], [options], batch_size=batch_size)[0]
        return options[0] if scores[0] >= scores[1] else options[1]
    return judge
