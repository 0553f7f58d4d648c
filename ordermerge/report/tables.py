"""The paper's score tables, each cell with how sure it is.

Table 1 (single SFT vs merges, one column per task), Table 2 (the same per model, columns
by dataset), Table 3 (multi-task merging, per group) and Table 4 (merges of runs under
shuffled orders vs under fix-batch orders): each an entry of registry.py, which names the
functions here that build it, write it and place each record in it.

Rows: ``single`` (the K sub-models, or the one single-task model of each task in Table 3),
then one row per merge method and setting, labelled by the method registry
(``weighted-avg``, ``param-selection``, ``resample``, ``TIES``...; seeds of one setting
share a row). Scores are in percent. Per cell and task ``t`` the CSV has:

- ``t``: the mean over the cell's runs or seeds, ``t_std`` their sample std, ``t_n`` their
  number;
- ``t_lo``, ``t_hi``: the 95% interval (stats.mean_ci over runs/seeds; for a cell of one
  model the bootstrap over test items, stats.bootstrap_ci);
- ``t_p``: for every row but the reference, the two-sided paired sign-flip test against the
  reference row on the same test items (stats.paired_test; per-item scores averaged over
  the row's runs/seeds first). ``test_resamples`` and ``test_seed`` record how.

``avg_delta`` is the mean over the row's tasks of its score minus the reference's.
Markdown and LaTeX print ``mean ± std`` and the p-value's stars (* < 0.05, ** < 0.01,
*** < 0.001).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..merge.methods import METHODS, parse_method_id, row_names
from . import stats
from .registry import get as get_table

_ORDER = {name: i for i, name in enumerate(METHODS)}
SUFFIXES = ("_std", "_n", "_lo", "_hi", "_p")
# the K runs' ensemble (merge.ensemble): the last row, not a merge
ENSEMBLE = "ensemble (not a merge)"
DEFAULT_STATS = {"resamples": 10000, "bootstrap": 2000, "seed": 0}


def item_scores(record: dict) -> dict[str, float]:
    """An evaluation record's per-item scores: each example's ``correct`` (true/false, a
    preference in [0, 1], or null when unjudged: NaN) by example id."""
    out = {}
    for e in record.get("examples", []):
        c = e.get("correct")
        out[e["id"]] = math.nan if c is None else float(c)
    return out


def method_rows(df: pd.DataFrame) -> pd.Series:
    """Each record's row: single for SFT runs; for merges the registry label, or label (row
    id) where a task has several settings of one method."""
    out = pd.Series("single", index=df.index)
    out[df["kind"] == "base"] = "base"
    out[df["kind"] == "ensemble"] = ENSEMBLE
    merged = ~df["kind"].isin(["sft", "base", "ensemble"])
    for _, part in df[merged].groupby("task"):
        names = row_names(list(dict.fromkeys(part["name"])))
        out[part.index] = [names[n] for n in part["name"]]
    return out


def _row_order(df: pd.DataFrame) -> list[str]:
    key = {}
    for row, name, kind in zip(df["row"], df["name"], df["kind"]):
        if kind not in ("sft", "base", "ensemble"):
            key.setdefault(row, (_ORDER[parse_method_id(name)[0]], row))
    return (["base"] * bool((df["kind"] == "base").any()) + ["single"] + sorted(key, key=key.get)
            + [ENSEMBLE] * bool((df["kind"] == "ensemble").any()))


def _items_mean(item_dicts) -> pd.Series:
    """Per-item mean over several records' per-item scores (ids of the first record)."""
    frame = pd.DataFrame(list(item_dicts)).T
    return frame.mean(axis=1)


def summarise(df: pd.DataFrame, order: list[str] | None = None, reference: str = "single",
              stat: dict | None = None) -> pd.DataFrame:
    """records (task, kind, name, score in [0, 1], items: id -> per-item score; `row` if
    already labelled) -> rows x (task and its statistics..., avg_delta)."""
    stat = {**DEFAULT_STATS, **(stat or {})}
    df = df.copy()
    if "row" not in df:
        df["row"] = method_rows(df)
    order = order or _row_order(df)
    df["score"] = df["score"] * 100.0
    tasks = list(dict.fromkeys(sorted(df["task"])))
    cells = {key: part for key, part in df.groupby(["row", "task"], sort=False)}
    # the reference's per-item means, once per task
    refs = {t: _items_mean(item_scores_of(r) for _, r in cells[(reference, t)].iterrows())
            for t in tasks if (reference, t) in cells}
    out = []
    for row in order:
        rec: dict = {"row": row}
        for t in tasks:
            part = cells.get((row, t))
            scores = [] if part is None else list(part["score"])
            n = len(scores)
            rec[t] = float(np.mean(scores)) if n else math.nan
            rec[f"{t}_std"] = float(np.std(scores, ddof=1)) if n > 1 else math.nan
            rec[f"{t}_n"] = n
            if n > 1:
                lo, hi = stats.mean_ci(scores)
            elif n == 1:
                items = list(item_scores_of(part.iloc[0]).values())
                lo, hi = (100.0 * v for v in stats.bootstrap_ci(
                    items, resamples=stat["bootstrap"], seed=stat["seed"]))
            else:
                lo = hi = math.nan
            rec[f"{t}_lo"], rec[f"{t}_hi"] = lo, hi
            rec[f"{t}_p"] = math.nan
            if row != reference and part is not None and t in refs:
                a = _items_mean(item_scores_of(r) for _, r in part.iterrows())
                b = refs[t]
                common = a.index.intersection(b.index)
                if len(common):
                    rec[f"{t}_p"] = stats.paired_test(
                        a[common].to_numpy(), b[common].to_numpy(),
                        resamples=stat["resamples"], seed=stat["seed"]).p
        out.append(rec)
    table = pd.DataFrame(out).set_index("row")
    ref_scores = table.loc[reference, tasks]
    table["avg_delta"] = [(table.loc[r, tasks] - ref_scores).mean() if r != reference else math.nan
                          for r in table.index]
    table["test_resamples"] = stat["resamples"]
    table["test_seed"] = stat["seed"]
    return table


def item_scores_of(rec) -> dict[str, float]:
    items = rec["items"] if "items" in rec else None
    if not isinstance(items, dict):
        raise ValueError(f"{rec.get('path', 'a record')}: no per-item scores (examples)")
    return items


def table1(records: list[dict], stat: dict | None = None) -> pd.DataFrame:
    """`records`: dicts with task, kind (sft|merged), name, score (fraction in [0, 1]),
    items (per-item scores)."""
    if not records:
        raise ValueError("table1: no evaluation records")
    return summarise(pd.DataFrame(records), stat=stat)


def table3(records: list[dict], stat: dict | None = None) -> pd.DataFrame:
    """`records`: dicts with group, task, kind (sft for the single-task model | merged),
    name, score, items. One block of rows per group, its tasks as columns (others empty)."""
    if not records:
        raise ValueError("table3: no evaluation records")
    return _blocks(pd.DataFrame(records), "group", stat)


def _blocks(df: pd.DataFrame, key: str, stat: dict | None) -> pd.DataFrame:
    """summarise() per value of column `key` (in order of appearance), stacked, with `key`
    as the first column."""
    blocks = []
    for value, part in df.groupby(key, sort=False):
        block = summarise(part.drop(columns=key), stat=stat)
        block.insert(0, key, value)
        blocks.append(block)
    return pd.concat(blocks)


def table5(records: list[dict], stat: dict | None = None) -> pd.DataFrame:
    """`records`: dicts with finetuned (the Table 1 task whose models they are), task (a
    general benchmark: lm-eval's task), kind (base | sft | merged), name, score, items. One
    block of rows per fine-tuning task: base (the model before fine-tuning), single (the K
    runs), each merge; a column per benchmark. Every row is tested against single SFT."""
    if not records:
        raise ValueError("table5: no general-benchmark records")
    return _blocks(pd.DataFrame(records), "finetuned", stat)


def table4(records: list[dict], stat: dict | None = None) -> pd.DataFrame:
    """`records`: dicts with task, scheme (shuffle | fix-batch), kind, name, score, items.
    Rows as the paper prints them: single (shuffled orders), each merge under shuffled
    orders, the same merge under fix-batch orders; then single SFT under fix-batch orders.
    Every row is tested against single SFT under shuffled orders."""
    if not records:
        raise ValueError("table4: no evaluation records")
    df = pd.DataFrame(records)
    df["row"] = _table4_rows(df)
    merges = [r for r in _row_order(df.assign(row=method_rows(df))) if r != "single"]
    order = ["single"]
    for m in merges:
        order += [f"{m} (shuffle)", f"{m} (fix-batch)"]
    order.append("single (fix-batch)")
    present = set(df["row"])
    return summarise(df.drop(columns="scheme"), order=[r for r in order if r in present], stat=stat)


def _table4_rows(df: pd.DataFrame) -> list[str]:
    """Table 4's row of each record: single (shuffled orders), else `row (scheme)`."""
    return [r if (s == "shuffle" and r == "single") else f"{r} ({s})"
            for r, s in zip(method_rows(df), df["scheme"])]


def paper_column(task: str) -> str:
    """A task's column in Table 2: the dataset's name, so that a decoder's SST-2 (LLM-R's
    format) and an encoder's SST-2 (GLUE) share one."""
    from ..data.registry import get_task
    return get_task(task).paper.split(" (")[0].split()[0]


def table2(records: list[dict], stat: dict | None = None) -> pd.DataFrame:
    """`records`: dicts with model, task, kind, name, score, items. One block of rows per
    model (single, then its merges), columns by dataset (paper_column), in the order the
    models come."""
    if not records:
        raise ValueError("table2: no evaluation records")
    df = pd.DataFrame(records)
    df["task"] = [paper_column(t) for t in df["task"]]
    return _blocks(df, "model", stat)


def read_records(args: list[str], table: str) -> list[dict]:
    """The evaluation records a table is built from: paths, or BLOCK=PATH where the table
    has a block key (registry.py: the model of Table 2, the multi-task group of Table 3).
    Each: task, kind, name, score, scheme, items, path, and the block key's value."""
    import json
    from pathlib import Path
    key = get_table(table).block
    records = []
    for arg in args:
        if key and "=" not in arg:
            raise ValueError(f"table {table}: record argument {arg!r} is not {key.upper()}=PATH")
        block, path = arg.split("=", 1) if key else (None, arg)
        r = json.loads(Path(path).read_text())
        missing = [k for k in ("task", "kind", "name", "score", "scheme", "examples") if k not in r]
        if missing:
            raise ValueError(f"{path}: not an evaluation record (no {', '.join(missing)})")
        records.append({"task": r["task"], "kind": r["kind"], "name": r["name"],
                        "score": r["score"], "scheme": r["scheme"], "items": item_scores(r),
                        **({key: block} if key else {}),
                        "generation": r.get("generation"), "path": str(path)})
    return records


def check_backends(records: list[dict], table: str, allow_mixed: bool = False) -> None:
    """ValueError naming two records of `table` whose outputs were generated by different
    backends or backend versions (records without generated outputs do not count), unless
    `allow_mixed` (config evaluate.mixed_backends)."""
    import json
    seen = {}
    for r in records:
        if r.get("generation") is not None:
            seen.setdefault(json.dumps(r["generation"], sort_keys=True), r["path"])
    if len(seen) > 1 and not allow_mixed:
        (a, pa), (b, pb) = list(seen.items())[:2]
        raise ValueError(f"table {table}: its records were generated by different backends: "
                         f"{pa} by {a}, {pb} by {b} (rerun one side, or set "
                         f"evaluate.mixed_backends: true)")


def cells_of(records: list[dict], table: str) -> list[tuple[str | None, str, str]]:
    """(block, column, row) of each record in `table`, labelled as the table's builder
    labels them: the cell that each evaluation record counts in."""
    return globals()[get_table(table).cells](pd.DataFrame(records))


def method_cells(df: pd.DataFrame) -> list[tuple]:
    """Table 1's: the task's column, the method's row."""
    return [(None, t, r) for t, r in zip(df["task"], method_rows(df))]


def table4_cells(df: pd.DataFrame) -> list[tuple]:
    return [(None, t, r) for t, r in zip(df["task"], _table4_rows(df))]


def _block_cells(df: pd.DataFrame, key: str) -> list[tuple]:
    out: list = [None] * len(df)
    for value, part in df.groupby(key, sort=False):
        for i, t, r in zip(part.index, part["task"], method_rows(part)):
            out[i] = (value, t, r)
    return out


def table2_cells(df: pd.DataFrame) -> list[tuple]:
    """Per model, columns by dataset (paper_column)."""
    return _block_cells(df.assign(task=[paper_column(t) for t in df["task"]]), "model")


def table3_cells(df: pd.DataFrame) -> list[tuple]:
    return _block_cells(df, "group")


def table5_cells(df: pd.DataFrame) -> list[tuple]:
    return _block_cells(df, "finetuned")


def table2_markdown(table: pd.DataFrame) -> str:
    """The paper's layout: a row per model and merge, each cell single → merge (stars: the
    merge's paired test against single)."""
    tasks = [t for t in task_columns(table) if table[t].notna().any()]
    lines = ["| model | merge | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for model, block in table.groupby("model", sort=False):
        for row, rec in block.iterrows():
            if row == "single":
                continue
            cells = []
            for t in tasks:
                a, b = block.loc["single", t], rec[t]
                cells.append("–" if math.isnan(a) or math.isnan(b)
                             else f"{a:.2f} → {b:.2f}{stats.stars(rec[f'{t}_p'])}")
            lines.append(f"| {model} | {row} | " + " | ".join(cells) + " |")
    lines += ["", "single SFT (mean over the K runs) → the merge (mean over merge seeds), in percent; "
              "stars: paired sign-flip test against single SFT on the same test items. Standard "
              "deviations, 95% intervals and p-values are in the CSV."]
    return "\n".join(lines) + "\n"


def table2_latex(table: pd.DataFrame, number: str = "2") -> str:
    return grouped(table, lambda m, b: to_latex(b, caption=f"Table 2, {m}"), key="model")


def task_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns
            if not c.endswith(SUFFIXES) and c not in ("avg_delta", "group", "model", "finetuned",
                                                       "test_resamples", "test_seed")]


def _cells(table: pd.DataFrame, fmt_pm: str, fmt_stars) -> tuple[list[str], list[tuple[str, list[str]]]]:
    tasks = [t for t in task_columns(table) if table[t].notna().any()]
    rows = []
    for row, rec in table.iterrows():
        cells = []
        for t in tasks:
            m, s, n, p = rec[t], rec[f"{t}_std"], rec[f"{t}_n"], rec[f"{t}_p"]
            if math.isnan(m):
                cells.append("–")
                continue
            cell = f"{m:.2f}{fmt_pm}{s:.2f}" if n > 1 else f"{m:.2f}"
            cells.append(cell + fmt_stars(stats.stars(p)))
        d = rec["avg_delta"]
        cells.append("–" if math.isnan(d) else f"{d:+.2f}")
        rows.append((str(row), cells))
    return tasks, rows


def to_markdown(table: pd.DataFrame) -> str:
    tasks, rows = _cells(table, " ± ", lambda s: s)
    lines = ["| | " + " | ".join(tasks) + " | Avg Δ |", "|---|" + "---|" * (len(tasks) + 1)]
    lines += [f"| {row} | " + " | ".join(cells) + " |" for row, cells in rows]
    r, seed = int(table["test_resamples"].iloc[0]), int(table["test_seed"].iloc[0])
    lines += ["", f"Mean ± std over runs or merge seeds, in percent. Stars: paired sign-flip "
              f"test against single SFT on the same test items ({r} resamples, seed {seed}; "
              "exact when the items allow): * p < 0.05, ** p < 0.01, *** p < 0.001. 95% "
              "intervals and p-values are in the CSV."]
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                 ("#", r"\#"), ("–", "--"), ("Δ", r"$\Delta$")):
        s = s.replace(a, b)
    return s


def to_latex(table: pd.DataFrame, caption: str = "") -> str:
    tasks, rows = _cells(table, r" $\pm$ ", lambda s: f"$^{{{s}}}$" if s else "")
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "r" * (len(tasks) + 1) + "}",
             r"\toprule", " & ".join(["", *map(_tex, tasks), r"Avg $\Delta$"]) + r" \\", r"\midrule"]
    lines += [" & ".join([_tex(row), *[c if "$" in c else _tex(c) for c in cells]]) + r" \\"
              for row, cells in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{_tex(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def numbered_latex(table: pd.DataFrame, number: str) -> str:
    return to_latex(table, caption=f"Table {number}")


def grouped(table: pd.DataFrame, render, key: str = "group") -> str:
    """Render each block (a group of Table 3, a model of Table 2) under its name."""
    parts = []
    for name, block in table.groupby(key, sort=False):
        parts.append(render(name, block.drop(columns=key)))
    return "\n".join(parts)


def table3_markdown(table: pd.DataFrame) -> str:
    return grouped(table, lambda g, b: f"### {g}\n\n" + to_markdown(b))


def table3_latex(table: pd.DataFrame, number: str = "3") -> str:
    return grouped(table, lambda g, b: to_latex(b, caption=f"Multi-task merging, group {g}"))


def table5_markdown(table: pd.DataFrame) -> str:
    return grouped(table, lambda t, b: f"### fine-tuned on {t}\n\n" + to_markdown(b), key="finetuned")


def table5_latex(table: pd.DataFrame, number: str = "5") -> str:
    return grouped(table, lambda t, b: to_latex(b, caption=f"General benchmarks, fine-tuned on {t}"),
                   key="finetuned")


def build(table_no: str, records: list[dict], stat: dict | None = None) -> tuple[pd.DataFrame, str, str]:
    """Table `table_no` (an entry of registry.TABLES) of the read records: the table, its
    Markdown and LaTeX."""
    spec = get_table(table_no)
    if not spec.keep_scheme:
        records = [{k: v for k, v in r.items() if k != "scheme"} for r in records]
    table = globals()[spec.build](records, stat)
    return table, globals()[spec.markdown](table), globals()[spec.latex](table, spec.number)


def write(table: pd.DataFrame, md: str, tex: str, csv_path, md_path, tex_path=None,
          float_format: str = "%.4f") -> list:
    """The table as CSV (four decimals unless `float_format`), Markdown and (if `tex_path`)
    LaTeX, each atomically; returns the paths written."""
    from ..utils import atomic_file
    outs = [(csv_path, None), (md_path, md)] + ([(tex_path, tex)] if tex_path else [])
    for path, text in outs:
        with atomic_file(path) as fh:
            if text is None:
                table.to_csv(fh, float_format=float_format)
            else:
                fh.write(text)
    return [p for p, _ in outs]
