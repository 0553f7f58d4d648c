"""Greedy soup (Wortsman et al., ICML 2022) over the K runs of one task.

Sort the runs by validation score, best first (ties: the lower run index first). The soup
starts as the best run. Each next run is added if the uniform average of the soup and
that run scores at least the soup's score on the validation split; otherwise it is left
out. The result is the uniform average of the runs kept.

The runs' validation scores come from their validation records (the workflow's
`validate_runs` rule: the same evaluation as the test split's, on the task's validation
rows). Each candidate soup is written into a temporary directory and evaluated on the same
rows with the same settings, inside the merge job (`build`).

A candidate is made in two reads (`RunningSoup`): the float32 sum of the runs kept so far
(in the order they joined the soup, best first) and the run tried. The candidate is
(sum + run) / m rounded once to the runs' dtype, and the new sum (sum + run, float32) is
written in the same pass, to be the soup's sum if the run is kept. So the j-th candidate
reads two checkpoints (one of them float32), not j: at K = 20 and bf16, 19 candidates read
the bytes of 57 checkpoints, not 209. Its elements are the uniform average's arithmetic
(a float32 sum, then one division), with the terms added in joining order rather than in
run-index order (a different rounding of the same sum: within (m - 1) float32 ulps of the
sum before the division).

The final soup is written by the engine as this method: the weighted average with weight
1/|soup| on the kept runs and 0 on the others, so that merge.json lists all K runs and
which were kept, and its `soup` field every step: the run tried, the candidate soup, its
validation score and whether it was kept.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..evaluate.settings import scoring_settings
from ..utils import InputError
import torch

from .average import run as average_run
from .rounding import to_output

run = average_run  # the soup: the weighted average, weights 1/|soup| on the kept runs, 0 else


def soup_order(scores: list[float]) -> list[int]:
    """The runs in the order greedy soup tries them: best validation score first, ties by
    the lower run index."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def greedy(scores: list[float], soup_score, on_kept=None) -> tuple[list[int], list[dict]]:
    """The runs kept (indices, ascending) and the steps. `scores`: each run's validation
    score; `soup_score(indices)`: the validation score of the uniform average of those runs
    (called once per candidate, with ascending indices); `on_kept(indices)`: told of each
    candidate kept (the running sum's bookkeeping), after its score."""
    order = soup_order(scores)
    soup, best = [order[0]], scores[order[0]]
    steps = [{"run": order[0], "soup": list(soup), "score": best, "kept": True}]
    for i in order[1:]:
        candidate = sorted(soup + [i])
        s = soup_score(candidate)
        kept = s >= best
        steps.append({"run": i, "soup": candidate, "score": s, "kept": kept})
        if kept:
            soup, best = candidate, s
            if on_kept is not None:
                on_kept(candidate)
    return sorted(soup), steps


class RunningSoup:
    """Candidate soups in two reads each: the float32 sum of the runs kept so far and the run
    tried (module docstring). Candidates and sums are written under `tmp` (the caller's
    temporary directory). Each is removed once it is no longer needed: a candidate when the
    next is made, a sum when its candidate is left out or a later sum replaces it. At most
    one candidate and two sums are on disk at a time."""

    CHUNK = 1 << 20  # elements per step of the pass (a float32 temporary of 4 MB)

    def __init__(self, sub_models: list, first: int, tmp: Path):
        from .engine import _open_all
        self.paths = [Path(p) for p in sub_models]
        self.subs, _ = _open_all(self.paths, None)  # the same tensors, shapes and dtypes
        self.tmp = Path(tmp)
        self.members = [first]  # the soup's runs, in joining order
        self.sum = None  # directory of the float32 sum of `members`; None: one run, read as it is
        self._last: tuple[list[int], Path, Path] | None = None  # candidate, its dir, its sum

    def candidate(self, members: list[int]) -> Path:
        """The uniform average of `members` (the soup's runs and one more) in a directory of
        its own, as the runs' checkpoint (their dtypes, config and tokenizer files)."""
        import shutil

        from .st_io import DEFAULT_SHARD, Checkpoint, ShardedWriter, copy_model_files
        new = sorted(set(members) - set(self.members))
        if len(new) != 1 or sorted(self.members + new) != sorted(members):
            raise ValueError(f"candidate {members} is not the soup {self.members} and one run")
        new = new[0]
        self._drop_last()
        name = "-".join(map(str, members))
        out, total = self.tmp / name, self.tmp / f"sum-{name}"
        out.mkdir()
        total.mkdir()
        self._last = (sorted(members), out, total)
        run = self.subs[new]
        held = Checkpoint(self.sum) if self.sum is not None else self.subs[self.members[0]]
        infos = [run.tensors[n] for n in sorted(run.tensors)]
        writer = ShardedWriter(out, [(i.name, i.dtype, i.shape) for i in infos], DEFAULT_SHARD)
        sums = ShardedWriter(total, [(i.name, "F32" if i.is_float else i.dtype, i.shape)
                                     for i in infos], DEFAULT_SHARD)
        m = len(members)
        try:
            for c in (run, held):
                c.open()
            for info in infos:
                for start in range(0, info.numel, self.CHUNK) or [0]:
                    n = min(self.CHUNK, info.numel - start)
                    x = run.view(info.name, start, n)
                    if not info.is_float:  # the engine's final merge checks they agree
                        writer.write(info.name, x)
                        sums.write(info.name, x)
                        continue
                    acc = held.view(info.name, start, n).to(torch.float32, copy=True).add_(x)
                    if not bool(torch.isfinite(acc).all()):
                        bad = int((~torch.isfinite(acc)).nonzero()[0, 0]) + start
                        raise InputError(
                            f"greedy_soup: the candidate soup of runs {sorted(members)} is NaN or "
                            f"Inf in tensor {info.name!r} at flat index {bad} ({self.paths[new]} "
                            "or a run of the soup holds one, or their float32 sum overflowed)")
                    sums.write(info.name, acc)
                    writer.write(info.name, to_output(acc.div_(m), info.torch_dtype))
            writer.close()
            sums.close()
        finally:
            for c in (run, held):
                c.close()
        copy_model_files(out, [self.paths[new]])
        return out

    def kept(self, members: list[int]) -> None:
        """The last candidate (of `members`) is the soup now: its sum is the running sum."""
        import shutil
        if self._last is None or self._last[0] != sorted(members):
            raise ValueError(f"kept({members}): not the last candidate")
        (new,) = sorted(set(members) - set(self.members))
        old, self.sum = self.sum, self._last[2]
        self.members.append(new)
        self._last = (self._last[0], self._last[1], None)
        if old is not None:
            shutil.rmtree(old)

    def _drop_last(self) -> None:
        import shutil
        if self._last is not None:
            for d in self._last[1:]:
                if d is not None:
                    shutil.rmtree(d)
            self._last = None


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
    from .engine import merge
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
        running = RunningSoup(sub_models, soup_order(scores)[0], Path(tmp))

        def soup_score(members: list[int]) -> float:
            d = running.candidate(members)
            rec = evaluate_model(task, d, rows, cfg, name="soup", sessions=sessions)
            log(f"greedy soup: runs {members} score {rec['score']:.4f} on {len(rows)} "
                f"validation rows")
            return rec["score"]
        soup, steps = greedy(scores, soup_score, running.kept)
    weights = [1.0 / len(soup) if i in soup else 0.0 for i in range(len(sub_models))]
    soup_record = {"validation_scores": scores, "steps": steps, "kept": soup,
                   "validation": str(validation), "records": [str(r) for r in records],
                   "settings": scoring_settings(cfg)}

    return merge("greedy_soup", sub_models, out_dir, overwrite=True, weights=weights,
                 extra={"soup": soup_record}, before_rename=before_rename)
