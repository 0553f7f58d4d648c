"""Table 1 of the paper: single SFT vs the three merges, one column per task.

Rows: ``single`` (mean and sample std over the K sub-models), ``weighted-avg``,
``param-selection`` and ``resample`` (mean and sample std over merge seeds).
Scores are in percent; ``avg_delta`` is the mean over tasks of the row's
score minus ``single``'s.
"""
from __future__ import annotations

import math

import pandas as pd

ROWS = ("single", "weighted-avg", "param-selection", "resample")


def row_of(kind: str, name: str) -> str:
    """The table row an evaluated candidate belongs to."""
    if kind == "sft":
        return "single"
    if name == "avg":
        return "weighted-avg"
    if name.startswith("select-"):
        return "param-selection"
    if name.startswith("resample-"):
        return "resample"
    raise ValueError(f"no table row for candidate {kind}/{name}")


def table1(records: list[dict]) -> pd.DataFrame:
    """`records`: dicts with task, kind (sft|merged), name, score (fraction in [0, 1])."""
    if not records:
        raise ValueError("table1: no evaluation records")
    df = pd.DataFrame(records)
    df["row"] = [row_of(k, n) for k, n in zip(df["kind"], df["name"])]
    df["score"] = df["score"] * 100.0
    tasks = sorted(df["task"].unique())
    g = df.groupby(["row", "task"])["score"]
    mean, std, count = g.mean(), g.std(ddof=1), g.count()
    out = []
    for row in ROWS:
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


def to_markdown(table: pd.DataFrame) -> str:
    tasks = [c for c in table.columns if not c.endswith(("_std", "_n")) and c != "avg_delta"]
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
