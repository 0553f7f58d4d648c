"""The paper's score tables: Table 1 (single SFT vs merges, one column per task) and
Table 3 (multi-task merging, per group).

Rows: ``single`` (mean and sample std over the K sub-models, or the one single-task
model of each task in Table 3), then one row per merge method and setting, labelled by
the method registry (``weighted-avg``, ``param-selection``, ``resample``, ``TIES``...;
mean and sample std over merge seeds). Scores are in percent; ``avg_delta`` is the mean
over the row's tasks of its score minus ``single``'s.
"""
from __future__ import annotations

import math

import pandas as pd

from ..merge.methods import METHODS, parse_method_id, row_names

_ORDER = {name: i for i, name in enumerate(METHODS)}


def _rows(df: pd.DataFrame) -> pd.Series:
    """Each record's row: single for SFT runs; for merges the registry label, or label (row
    id) where a task has several settings of one method."""
    out = pd.Series("single", index=df.index)
    merged = df["kind"] != "sft"
    for _, part in df[merged].groupby("task"):
        names = row_names(list(dict.fromkeys(part["name"])))
        out[part.index] = [names[n] for n in part["name"]]
    return out


def _row_order(df: pd.DataFrame) -> list[str]:
    key = {}
    for row, name, kind in zip(df["row"], df["name"], df["kind"]):
        if kind != "sft":
            key.setdefault(row, (_ORDER[parse_method_id(name)[0]], row))
    return ["single"] + sorted(key, key=key.get)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """records (task, kind, name, score in [0, 1]) -> rows x (task, task_std, task_n,
    avg_delta)."""
    df = df.copy()
    df["row"] = _rows(df)
    df["score"] = df["score"] * 100.0
    tasks = list(dict.fromkeys(sorted(df["task"])))
    g = df.groupby(["row", "task"])["score"]
    mean, std, count = g.mean(), g.std(ddof=1), g.count()
    out = []
    for row in _row_order(df):
        rec: dict = {"row": row}
        for t in tasks:
            rec[t] = mean.get((row, t), math.nan)
            rec[f"{t}_std"] = std.get((row, t), math.nan)
            rec[f"{t}_n"] = int(count.get((row, t), 0))
        out.append(rec)
    table = pd.DataFrame(out).set_index("row")
    single = table.loc["single", tasks]
    table["avg_delta"] = [(table.loc[r, tasks] - single).mean() if r != "single" else math.nan
                          for r in table.index]
    return table


def table1(records: list[dict]) -> pd.DataFrame:
    """`records`: dicts with task, kind (sft|merged), name, score (fraction in [0, 1])."""
    if not records:
        raise ValueError("table1: no evaluation records")
    return summarise(pd.DataFrame(records))


def table3(records: list[dict]) -> pd.DataFrame:
    """`records`: dicts with group, task, kind (sft for the single-task model | merged),
    name, score. One block of rows per group, its tasks as columns (others empty)."""
    if not records:
        raise ValueError("table3: no evaluation records")
    df = pd.DataFrame(records)
    blocks = []
    for group, part in df.groupby("group", sort=False):
        block = summarise(part.drop(columns="group"))
        block.insert(0, "group", group)
        blocks.append(block)
    return pd.concat(blocks)


def _task_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns
            if not c.endswith(("_std", "_n")) and c not in ("avg_delta", "group")]


def to_markdown(table: pd.DataFrame) -> str:
    tasks = [t for t in _task_columns(table) if table[t].notna().any()]
    lines = ["| | " + " | ".join(tasks) + " | Avg Δ |", "|---|" + "---|" * (len(tasks) + 1)]
    for row, rec in table.iterrows():
        cells = []
        for t in tasks:
            m, s, n = rec[t], rec[f"{t}_std"], rec[f"{t}_n"]
            if math.isnan(m):
                cells.append("–")
            elif n > 1:
                cells.append(f"{m:.2f} ± {s:.2f}")
            else:
                cells.append(f"{m:.2f}")
        d = rec["avg_delta"]
        cells.append("–" if math.isnan(d) else f"{d:+.2f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table3_markdown(table: pd.DataFrame) -> str:
    parts = []
    for group, block in table.groupby("group", sort=False):
        parts.append(f"### {group}\n\n" + to_markdown(block.drop(columns="group")))
    return "\n".join(parts)
