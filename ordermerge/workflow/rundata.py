"""The per-run data a data-aware merge method reads, one entry each: a method's registry entry
names its kind (``Method.data``), and the entry here says everything the workflow needs of
it once: the rule that makes it (declared with its stage, script and cost model in
stages.py), the script that makes the merge, the merge job's inputs, the command-line
arguments that pass them, the params that replace the merge weights, and the ``ordermerge
merge`` flags that take it. The plan (rules/train_merge.py) and the command line look a
method's data up here; none of them branches on its kind.

A new data-aware method adds its entry here, its producing rule (rules/*.smk, stages.py, a
``cost_`` model in projection.py) and its reader in the merge engine."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class RunData:
    kind: str                  # Method.data
    rule: str                  # the rule that makes it (stages.RULES)
    script: str                # the script that makes the merge (scripts/)
    keys: tuple[str, ...]      # the names of its inputs in the merge job
    # the merge job's inputs: (plan, wildcards, the method's settings) -> {key: path(s)}
    inputs: Callable[..., dict]
    # the merge command's arguments, from the job's inputs (by `keys`)
    args: Callable[..., str]
    flags: tuple[str, ...]     # the `ordermerge merge` flags that take it
    # the job's params in place of the merge weights: (plan, wildcards) -> dict; None: the weights
    params: Callable[..., dict] | None = None


def _fisher_inputs(plan, w, settings) -> dict:
    """Each run's diagonal Fisher over the method's rows (rule diagonal_fisher)."""
    return {"fisher_dirs": [plan.fisher_dir(w.model, w.task, w.scheme, r, w.epoch, settings["rows"])
                            for r in plan.runs]}


def _validation_inputs(plan, w, settings) -> dict:
    """Each run's record on the validation split (rule validate_runs), and the split: greedy
    soup scores its candidates on it."""
    return {"validation": [plan.validation_record(w.model, w.task, w.scheme, w.epoch, r)
                           for r in plan.runs],
            "validation_split": plan.data(w.task, "validation")}


RUN_DATA = {d.kind: d for d in [
    RunData("diagonal_fisher", "diagonal_fisher", "merge.py", ("fisher_dirs",), _fisher_inputs,
            lambda input: "--fisher " + " ".join(input.fisher_dirs), ("--fisher",)),
    RunData("validation_records", "validate_runs", "greedy_soup.py",
            ("validation", "validation_split"), _validation_inputs,
            lambda input: ("--validation " + " ".join(input.validation)
                           + f" --validation-split {input.validation_split}"),
            ("--validation", "--validation-split", "--task"),
            # greedy soup evaluates its candidates as the runs were evaluated
            params=lambda plan, w: {"task": w.task, "evaluate": plan.eval_cfg(
                w.task, "soup", w.epoch, w.scheme, w.model)}),
]}


def run_data(method) -> RunData | None:
    """The per-run data merge method `method` (a registry entry) reads; None: none."""
    if method.data is None:
        return None
    if method.data not in RUN_DATA:
        raise KeyError(f"merge method {method.name!r} reads {method.data!r}, which "
                       f"ordermerge/workflow/rundata.py does not declare")
    return RUN_DATA[method.data]


def held_by(input) -> list[RunData]:
    """The entries whose data a merge job's inputs hold (by their input names)."""
    return [d for d in RUN_DATA.values() if set(d.keys) <= set(input.keys())]
