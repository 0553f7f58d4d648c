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

from ..evaluate.settings import scoring_settings
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


def record_settings(path: Path, record: dict) -> dict | None:
    """The settings an evaluation record was made with: its own `settings`, or (a record
    made before records carried them) the params of its provenance record; None if neither."""
    if isinstance(record.get("settings"), dict):
        return record["settings"]
    from ..provenance import SIDECAR_SUFFIX
    try:
        params = json.loads(Path(str(path) + SIDECAR_SUFFIX).read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return scoring_settings(params) if isinstance(params, dict) else None


def validation_scores(sub_models: list, records: list, task: str | None = None,
                      rows: list[dict] | None = None) -> tuple[list[float], list[dict | None]]:
    """Each run's validation score and the settings it was scored with, from its record;
    InputError where a record is not of its run (the record names the checkpoint it
    evaluated), not of `task`, or not of the ids of `rows`."""
    if len(records) != len(sub_models):
        raise InputError(f"greedy_soup: {len(records)} validation records for "
                         f"{len(sub_models)} runs (one each, in the runs' order)")
    scores, settings = [], []
    ids = None if rows is None else sorted(str(r.get("id")) for r in rows)
    for sub, rec in zip(sub_models, records):
        try:
            r = json.loads(Path(rec).read_text())
            score, path = float(r["score"]), r["model_path"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"greedy_soup: {rec}: not an evaluation record ({e})") from None
        if Path(path).resolve() != Path(sub).resolve():
            raise InputError(f"greedy_soup: {rec} is the record of {path}, not of {sub}")
        if task is not None and r.get("task") != task:
            raise InputError(f"greedy_soup: {rec} is an evaluation of task {r.get('task')!r}, "
                             f"not of {task!r}")
        if ids is not None:
            seen = sorted(str(e.get("id")) for e in r.get("examples") or [] if isinstance(e, dict))
            if seen != ids:
                other = sorted(set(seen) ^ set(ids))
                raise InputError(f"greedy_soup: {rec} was evaluated on other rows than the "
                                 f"validation split's ({len(seen)} rows against {len(ids)}"
                                 + (f"; e.g. {other[0]!r} is in one only" if other else "")
                                 + "): its score and the soups' would not compare")
        scores.append(score)
        settings.append(record_settings(Path(rec), r))
    return scores, settings


def check_settings(records: list, settings: list[dict | None], cfg: dict) -> None:
    """InputError unless every record was scored with the settings `cfg` scores the
    candidate soups with (a soup kept or left out on other settings is a wrong soup)."""
    want = scoring_settings(cfg)
    for rec, got in zip(records, settings):
        if got is None:
            raise InputError(f"greedy_soup: {rec} does not say the evaluate settings it was made "
                             "with (no 'settings' and no provenance record): evaluate the run again")
        for key in sorted(set(want) | set(got)):
            if want.get(key) != got.get(key):
                raise InputError(
                    f"greedy_soup: evaluate setting {key} is {json.dumps(want.get(key))} for the "
                    f"candidate soups but {json.dumps(got.get(key))} in {rec}: the soups would be "
                    "scored under other settings than the runs")


def build(sub_models: list, records: list, task_name: str, validation: Path, cfg: dict,
          out_dir: Path, *, threads: int | None = None, log=print, before_rename=None) -> dict:
    """The greedy soup of `sub_models` into `out_dir` (replacing a previous merge there):
    candidate soups merged in a temporary directory beside it and evaluated on the rows of
    `validation` with the evaluate settings `cfg` (the task's evaluate section with kind,
    epoch, scheme, model, max_length). Returns the recipe, with `soup` (the steps)."""
    import tempfile

    from ..data.registry import get_task
    from ..evaluate.run import evaluate_model
    from ..evaluate.backends import Sessions
    from ..utils import read_jsonl
    from .engine import merge, merge_into
    task = get_task(task_name)
    try:
        rows = read_jsonl(validation)
    except (OSError, ValueError) as e:  # ValueError names the file and line
        raise InputError(f"greedy_soup: validation split {validation}: "
                         f"{e.strerror if isinstance(e, OSError) else e}") from None
    scores, settings = validation_scores(sub_models, records, task_name, rows)
    check_settings(records, settings, cfg)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with Sessions(threads=threads) as sessions, \
            tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".soup-") as tmp:
        def soup_score(members: list[int]) -> float:
            d = Path(tmp) / "-".join(map(str, members))
            d.mkdir()
            # this method with uniform weights: the uniform average of the members
            merge_into(d, "greedy_soup", [sub_models[i] for i in members],
                       weights=[1.0 / len(members)] * len(members))
            rec = evaluate_model(task, d, rows, cfg, name="soup", sessions=sessions)
            log(f"greedy soup: runs {members} score {rec['score']:.4f} on {len(rows)} "
                f"validation rows")
            return rec["score"]
        soup, steps = greedy(scores, soup_score)
    weights = [1.0 / len(soup) if i in soup else 0.0 for i in range(len(sub_models))]
    soup_record = {"validation_scores": scores, "steps": steps, "kept": soup,
                   "validation": str(validation), "records": [str(r) for r in records],
                   "settings": scoring_settings(cfg)}

    return merge("greedy_soup", sub_models, out_dir, overwrite=True, weights=weights,
                 extra={"soup": soup_record}, before_rename=before_rename)
