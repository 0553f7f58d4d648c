"""Every rule that runs as a job, declared once: its config stage (``resources.<stage>``: its
threads and resources come from it, a failed job names the setting to change by it, the cost
table counts allocated CPUs and GPUs by it), the script its shell runs (``scripts/<script>``:
its code inputs, and the rerun table of docs/reruns.md, are computed from it) and its cost
model (``Projector.cost_<cost>`` of projection.py: what ``ordermerge plan`` projects for each
of its jobs).

The Snakefile refuses a rule declared in ``rules/*.smk`` that is not here, or whose script is
not the one here; the tests refuse a cost model the projection does not have.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..report.registry import TABLES


@dataclass(frozen=True)
class Rule:
    stage: str          # config resources.<stage>
    script: str         # scripts/<script>
    cost: str           # projection.Projector.cost_<cost>
    shown: str = ""     # the name the rerun table shows for a family of rules made in a loop


# in the workflow's order (the rerun table's rows follow it)
RULES = {
    "prepare_data": Rule("data", "prepare_data.py", "free"),
    "order": Rule("order", "make_order.py", "free"),
    "tokenizer": Rule("base", "tokenizer.py", "free"),
    "base": Rule("base", "base.py", "base"),
    "encoder_base": Rule("base", "encoder_base.py", "base"),
    "encoder_init": Rule("base", "encoder_init.py", "free"),
    "sft": Rule("sft", "sft.py", "sft"),
    "merge": Rule("merge", "merge.py", "merge"),
    "merge_seeds": Rule("merge", "merge.py", "merge"),
    "multitask_align": Rule("merge", "multitask_align.py", "multitask_align"),
    "multitask_merge": Rule("merge", "merge.py", "multitask_merge"),
    "diagonal_fisher": Rule("evaluate", "run_data.py", "diagonal_fisher"),
    "input_gram": Rule("evaluate", "run_data.py", "input_gram"),
    "validate_runs": Rule("evaluate", "evaluate.py", "validate_runs"),
    "merge_soup": Rule("evaluate", "greedy_soup.py", "merge_soup"),
    "evaluate": Rule("evaluate", "evaluate.py", "evaluate"),
    "evaluate_runs": Rule("evaluate", "evaluate.py", "evaluate"),
    "evaluate_seeds": Rule("evaluate", "evaluate.py", "evaluate"),
    "evaluate_ensemble": Rule("evaluate", "evaluate.py", "evaluate"),
    "evaluate_multitask": Rule("evaluate", "evaluate.py", "evaluate"),
    "general_eval": Rule("evaluate", "general_eval.py", "general_eval"),
    "general_eval_runs": Rule("evaluate", "general_eval.py", "general_eval"),
    "general_eval_seeds": Rule("evaluate", "general_eval.py", "general_eval"),
    "general_eval_base": Rule("evaluate", "general_eval.py", "general_eval"),
    "score": Rule("evaluate", "score.py", "score"),
    "curve": Rule("evaluate", "curve.py", "curve"),
    "cost": Rule("report", "cost.py", "free"),
    "figure1": Rule("report", "figure.py", "free", "figure{N}"),
    "figure3": Rule("report", "figure.py", "free", "figure{N}"),
    "figure4": Rule("report", "figure.py", "free", "figure{N}"),
}
# rules made in a loop over what the config names, by name prefix: one group merge's
# evaluation on all its tasks (rules/multitask.smk), one table (rules/report.smk,
# report/registry.py); each after the rule named beside it in the rerun table
MULTITASK_EVAL_PREFIX = "evaluate_multitask_"
TABLE_PREFIX = "table"
FAMILIES = {
    MULTITASK_EVAL_PREFIX: (Rule("evaluate", "evaluate.py", "evaluate",
                                 f"{MULTITASK_EVAL_PREFIX}{{GROUP}}"), "evaluate_multitask"),
    TABLE_PREFIX: (Rule("report", "table.py", "free", f"{TABLE_PREFIX}{{N}}"), "curve"),
}

# each rule's stage (the cost job's params: editing this mapping reruns the cost table)
STAGES = {name: r.stage for name, r in RULES.items()}
# benchmark directories that are not a rule's name: results/benchmarks/multitask/ holds the
# multi-task merges (their evaluations are under evaluate/multitask/)
BENCHMARK_STAGES = {**STAGES, "multitask": "merge"}


def rule_of(name: str) -> Rule | None:
    """The declaration of workflow rule `name` (None: not one of the workflow's)."""
    if name in RULES:
        return RULES[name]
    if name.startswith(MULTITASK_EVAL_PREFIX):
        return FAMILIES[MULTITASK_EVAL_PREFIX][0]
    if name.startswith(TABLE_PREFIX) and name.removeprefix(TABLE_PREFIX) in TABLES:
        return FAMILIES[TABLE_PREFIX][0]
    return None


def stage_of(name: str) -> str | None:
    """The config resources stage of workflow rule `name` (None: not one of the workflow's)."""
    r = rule_of(name)
    return r.stage if r else None


def shown_rules() -> dict[str, Rule]:
    """Each rule as the rerun table shows it (a family once, by its placeholder name), in
    the workflow's order."""
    out: dict[str, Rule] = {}
    after = {a: r for r, a in FAMILIES.values()}
    for name, r in RULES.items():
        out.setdefault(r.shown or name, r)
        if name in after:
            out[after[name].shown] = after[name]
    return out


def check_rules(rules) -> list[str]:
    """What the Snakefile's rules (each with a `name` and a `script` input, as
    snakemake's Rule objects are) disagree on with the declarations here."""
    out = []
    for rule in rules:
        if rule.name == "all":
            continue
        decl = rule_of(rule.name)
        if decl is None:
            out.append(f"rule {rule.name} is not declared in ordermerge/workflow/stages.py RULES")
            continue
        script = getattr(rule.input, "script", None)
        if script is None or str(script).rsplit("/", 1)[-1] != decl.script:
            out.append(f"rule {rule.name} runs {script}, but ordermerge/workflow/stages.py "
                       f"declares scripts/{decl.script}")
    return out
