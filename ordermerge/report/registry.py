"""The paper's tables, one entry each: which evaluation records a table reads (from the
workflow's plan), how ``report/tables.py`` builds it and writes its Markdown and LaTeX, the
block its records are grouped by, the cell each record counts in, its params and its
caption. One rule of ``rules/report.smk`` makes every table the config asks for (a table is
made when it has records; Table 1 always). Adding a table is one entry here (and, for a
layout of its own, its functions in tables.py) plus its test.

This module imports neither pandas nor the plan (the Snakefile reads it): an entry names
its tables.py functions, and its ``records`` and ``params`` take the plan as an argument.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class TableSpec:
    number: str
    what: str  # one line: what the table compares
    build: str  # tables.py: (records, stats) -> the table (a DataFrame)
    markdown: str  # tables.py: table -> Markdown
    latex: str  # tables.py: (table, number) -> LaTeX
    cells: str  # tables.py: records -> (block, column, row) of each record (the audit's --cell)
    # plan -> [(block or None, evaluation record path)], in the table's order
    records: Callable[[Any], list[tuple[str | None, str]]]
    params: Callable[[Any], dict]  # plan -> the build's params (besides its records)
    caption: str  # the HTML report's caption (reStructuredText)
    block: str | None = None  # records come as BLOCK=PATH and group the rows: model, group
    keep_scheme: bool = False  # the build reads each record's order scheme
    always: bool = False  # made even without records (and then fails, naming why)


def _stats(p) -> dict:
    return p.config["report"]["stats"]


def _table1_records(p) -> list:
    """Each task's K runs and merges at the report epoch, and the runs' ensemble where
    merge.ensemble asks for it."""
    out = []
    for t in p.tasks:
        out += [(None, r) for r in p.eval_records(t, p.schemes[0], [p.report_epoch])]
        if p.config["merge"]["ensemble"]:
            out.append((None, p.eval_record(p.model_of(t), t, p.schemes[0], p.report_epoch,
                                            "ensemble", "runs")))
    return out


def _table2_records(p) -> list:
    """Every model (encoders first, then decoders, as the paper prints them) on its tasks
    among table2.tasks (default: the tasks of the paper's Table 2): its K runs and the
    table2.methods merges at the report epoch; none unless two models have some."""
    t2 = p.config["table2"]
    if t2 is None:
        return []
    from ..data.tasks import TASKS
    wanted = t2["tasks"] or [t for t in p.tasks if TASKS[t].table2]
    models = [m for m in p.encoders + p.decoders if "lora" not in p.models[m]]  # LoRA: table1L
    out = [(m, r) for m in models for t in p.models[m]["tasks"] if t in wanted
           for r in p.eval_records(t, p.schemes[0], [p.report_epoch], t2["methods"], model=m)]
    return out if len({m for m, _ in out}) >= 2 else []


def _table3_records(p) -> list:
    """Every multi-task group's single and merged records on each of its tasks."""
    out = []
    for group, g in p.groups.items():
        for t in g["tasks"]:
            out.append((group, p.single_record(group, t)))
            out += [(group, f"results/eval/multitask/{group}/{t}/{mid}.json") for mid in p.group_ids(group)]
    return out


def _lora(p) -> dict | None:
    return next((v["lora"] for v in p.models.values() if "lora" in v), None)


def _table1l_records(p) -> list:
    """The LoRA runs (the lora section) of each of its tasks and their merges."""
    lo = _lora(p)
    if lo is None:
        return []
    return [(None, r) for t in lo["tasks"]
            for r in p.eval_records(t, p.schemes[0], [p.report_epoch], lo["methods"], model=lo["name"])]


def _table4_records(p) -> list:
    """Every Table 4 task's runs and merges (table4.methods) under both order schemes."""
    return [(None, r) for t in p.table4_tasks for scheme in ("shuffle", "fix-batch")
            for r in p.eval_records(t, scheme, [p.report_epoch], p.table4["methods"])]


def _table5_records(p) -> list:
    """Every Table 1 model of general_eval's fine-tuned tasks (the base, the K runs, each merge)
    on each general benchmark (plan.general_records)."""
    return p.general_records()


TABLES: dict[str, TableSpec] = {t.number: t for t in [
    TableSpec(
        "1", "single SFT vs the merges of its K runs, per task", "table1", "to_markdown",
        "numbered_latex", "method_cells", _table1_records,
        lambda p: {"epoch": p.report_epoch, "scheme": p.schemes[0], "stats": _stats(p),
                   "models": {t: p.model_of(t) for t in p.tasks}},
        "Table 1 of Ju et al. 2024 on this run's config: single SFT (mean ± std over the K "
        "sub-models) against the weighted average, parameter selection and selection + resample "
        "merges and the configured task-vector baselines (mean ± std over merge seeds), in "
        "percent, at the report epoch; ``avg_delta`` is the mean gain over single SFT. The CSV "
        "adds each cell's 95% interval (t over runs/seeds; a bootstrap over test items for one "
        "model) and each merge's paired sign-flip p-value against single SFT on the same test "
        "items; stars in the Markdown and LaTeX: ``*`` p < 0.05, ``**`` p < 0.01, ``***`` p < 0.001. "
        "The row ``ensemble`` (``merge.ensemble``) is not a merge: the K runs' averaged output "
        "distributions, what a merge of them is read against.",
        always=True),
    TableSpec(
        "1L", "Table 1 for LoRA runs: single LoRA SFT vs the exact merges of its K LoRA runs",
        "table1", "to_markdown", "numbered_latex", "method_cells", _table1l_records,
        lambda p: {"epoch": p.report_epoch, "scheme": p.schemes[0], "stats": _stats(p),
                   "models": {t: _lora(p)["name"] for t in _lora(p)["tasks"]}},
        "Table 1 for the LoRA runs of the ``lora`` section: the primary decoder's base "
        "fine-tuned K times per task with LoRA adapters, on the orders of the full runs; single "
        "SFT (mean ± std over the K LoRA runs, each evaluated as its update folded into the "
        "base) against the merges of the K runs' updates ΔW = B A · alpha / r (exact, not PEFT's "
        "combination of A and B; ``merge/lora_runs.py``), in percent at the report epoch. The "
        "CSV has the 95% intervals and the paired sign-flip p-values against single LoRA SFT."),
    TableSpec(
        "2", "the same per model (encoders and decoders), columns by dataset", "table2",
        "table2_markdown", "table2_latex", "table2_cells", _table2_records,
        lambda p: {"epoch": p.report_epoch, "scheme": p.schemes[0], "stats": _stats(p),
                   "models": {m: p.models[m]["spec"]
                              for m in dict.fromkeys(m for m, _ in p.table_records("2"))}},
        "Table 2 of Ju et al. 2024 on this run's config: every model (encoders, then decoders; "
        "sizes as configured under ``model``, ``encoder`` and ``models``) on SST-2 / MNLI / SQuAD "
        "(the ones configured), single SFT (mean over the K runs) against the merges of "
        "``table2.methods`` (the paper: parameter selection; mean over merge seeds), in percent "
        "at the report epoch. Decoders run the datasets in LLM-R's instruction format, encoders "
        "in GLUE's / SQuAD's with a task head. The CSV has std, 95% intervals and the paired "
        "sign-flip p-values; stars mark p < 0.05 / 0.01 / 0.001.",
        block="model"),
    TableSpec(
        "3", "multi-task merging, per group", "table3", "table3_markdown", "table3_latex",
        "table3_cells", _table3_records,
        lambda p: {"groups": p.groups, "epoch": p.report_epoch, "scheme": p.schemes[0],
                   "stats": _stats(p)},
        "Table 3 of Ju et al. 2024 on this run's config (multi-task merging): per group, "
        "``single`` is each task's single-task model on its own task; every other row is one "
        "model merged from the group's single-task models (mean ± std over merge seeds for the "
        "seeded methods), evaluated on every task of the group, in percent; ``avg_delta`` is "
        "the mean change against ``single``.",
        block="group", keep_scheme=True),
    TableSpec(
        "4", "merges of runs under shuffled vs fix-batch orders", "table4", "to_markdown",
        "numbered_latex", "table4_cells", _table4_records,
        lambda p: {"epoch": p.report_epoch, "tasks": p.table4_tasks, "stats": _stats(p)},
        "Table 4 of Ju et al. 2024 (the fix-batch variant): per task, single SFT under shuffled "
        "orders (mean ± std over the K runs), the configured merges (``table4.methods``) of the "
        "K runs trained under shuffled orders and of the K runs trained under fix-batch orders "
        "(batch contents fixed, only the order of batches varies), and single SFT under "
        "fix-batch orders. Scores in percent at the report epoch; stars mark a paired "
        "sign-flip test against single SFT (shuffled) on the same test items; intervals and "
        "p-values are in the CSV.",
        keep_scheme=True),
    TableSpec(
        "5", "what fine-tuning and merging cost on general benchmarks (lm-eval)", "table5",
        "table5_markdown", "table5_latex", "table5_cells", _table5_records,
        lambda p: {"epoch": p.report_epoch, "scheme": p.schemes[0], "stats": _stats(p),
                   "benchmarks": p.general["tasks"], "finetuned": p.general_finetuned()},
        "General capabilities (beyond the paper): per fine-tuning task, the base model, single "
        "SFT (mean ± std over the K runs) and each merge at the report epoch on the general "
        "benchmarks of ``general_eval`` through lm-evaluation-harness (one column each: the "
        "mean of the task's per-item metric, in percent). The CSV has each cell's 95% interval "
        "and each row's paired sign-flip p-value against single SFT on the same benchmark "
        "items; stars: ``*`` p < 0.05, ``**`` p < 0.01, ``***`` p < 0.001. Every record names lm-eval's "
        "version, the task versions and config hashes, n-shot, seeds, batch size and backend "
        "(docs/general.md).",
        block="finetuned"),
]}


def get(number: str) -> TableSpec:
    try:
        return TABLES[str(number)]
    except KeyError:
        raise ValueError(f"no table {number!r}; the tables: {', '.join(TABLES)}") from None
