"""Greedy soup (Wortsman et al., ICML 2022) over the K runs of one task.

Sort the runs by validation score, best first (ties: the lower run index first). The soup
starts as the best run. Each next run is added if the uniform average of the soup and
that run scores at least the soup's score on the validation split; otherwise it is left
out. The result is the uniform average of the runs kept.

The runs' validation scores come from their validation records (the workflow's
`validate_runs` rule: the same evaluation as the test split's, on the task's validation
rows). Each candidate soup is merged (uniform average) into a temporary directory and
evaluated on the same rows with the same settings, inside the merge job (`build`). The
final soup is written by the engine as this method: the weighted average with weight
1/|soup| on the kept runs and 0 on the others, so that merge.json lists all K runs and
which were kept, and its `soup` field every step: the run tried, the candidate soup, its
validation score and whether it was kept.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..utils import InputError
from .average import run as average_run

run = average_run  # the soup: the weighted average, weights 1/|soup| on the kept runs, 0 else


def greedy(scores: list[float], soup_score) -> tuple[list[int], list[dict]]:
    """The runs kept (indices, ascending) and the steps. `scores`: each run's validation
    score; `soup_score(indices)`: the validation score of the uniform average of those runs
    (called once per candidate, with ascending indices)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    soup, best = [order[0]], scores[order[0]]
    steps = [{"run": order[0], "soup": list(soup), "score": best, "kept": True}]
    for i in order[1:]:
        candidate = sorted(soup + [i])
        s = soup_score(candidate)
        kept = s >= best
        steps.append({"run": i, "soup": candidate, "score": s, "kept": kept})
        if kept:
            soup, best = candidate, s
    return sorted(soup), steps


def validation_scores(sub_models: list, records: list) -> list[float]:
    """Each run's validation score, from its record; InputError where a record is not of
    its run (the record names the checkpoint it evaluated)."""
    if len(records) != len(sub_models):
        raise InputError(f"greedy_soup: {len(records)} validation records for "
                         f"{len(sub_models)} runs (one each, in the runs' order)")
    out = []
    for sub, rec in zip(sub_models, records):
        try:
            r = json.loads(Path(rec).read_text())
            score, path = float(r["score"]), r["model_path"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"greedy_soup: {rec}: not an evaluation record ({e})") from None
        if Path(path).resolve() != Path(sub).resolve():
            raise InputError(f"greedy_soup: {rec} is the record of {path}, not of {sub}")
        out.append(score)
    return out


def build(sub_models: list, records: list, task_name: str, validation: Path, cfg: dict,
          out_dir: Path, *, threads: int | None = None, log=print, before_rename=None) -> dict:
    """The greedy soup of `sub_models` into `out_dir` (replacing a previous merge there):
    candidate soups merged in a temporary directory beside it and evaluated on the rows of
    `validation` with the evaluate settings `cfg` (the task's evaluate section with kind,
    epoch, scheme, model, max_length). Returns the recipe, with `soup` (the steps)."""
    import tempfile

    from ..data.registry import get_task
    from ..evaluate.run import evaluate_model
    from ..evaluate.vllm_backend import VLLMSession
    from ..utils import read_jsonl
    from .engine import merge, merge_into
    scores = validation_scores(sub_models, records)
    task, rows = get_task(task_name), read_jsonl(validation)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with VLLMSession(threads=threads) as vllm, \
            tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".soup-") as tmp:
        def soup_score(members: list[int]) -> float:
            d = Path(tmp) / "-".join(map(str, members))
            d.mkdir()
            # this method with uniform weights: the uniform average of the members
            merge_into(d, "greedy_soup", [sub_models[i] for i in members],
                       weights=[1.0 / len(members)] * len(members))
            rec = evaluate_model(task, d, rows, cfg, name="soup", vllm=vllm)
            log(f"greedy soup: runs {members} score {rec['score']:.4f} on {len(rows)} "
                f"validation rows")
            return rec["score"]
        soup, steps = greedy(scores, soup_score)
    weights = [1.0 / len(soup) if i in soup else 0.0 for i in range(len(sub_models))]
    soup_record = {"validation_scores": scores, "steps": steps, "kept": soup,
                   "validation": str(validation), "records": [str(r) for r in records]}

    return merge("greedy_soup", sub_models, out_dir, overwrite=True, weights=weights,
                 extra={"soup": soup_record}, before_rename=before_rename)
