"""What a run cost: wall, CPU and GPU hours per rule group and per paper table, summed from
the Snakemake ``benchmark:`` files (results/benchmarks/<rule>/...tsv, one per job).

Per job: wall = the benchmark's ``s``; allocated CPU-hours = wall × the stage's configured
cpus; measured CPU-hours = its ``cpu_time`` (user + system of the job's processes), plus, for
a job that ran forked from the warm worker (ordermerge/warm.py), the CPU time of that child,
from the last line of the job's log (the benchmark sees only the client's process tree: the
child is the warm worker's); GPU-hours = wall × the stage's configured gpus. Each job counts once, under the first table that
needs it: a job under ``fix-batch`` orders is Table 4's, a scoring or curve job the figures',
a multi-task job Table 3's, the base models "shared", everything else Table 1's (the
shuffled runs Tables 4 and the figures reuse are counted there).

Each row also has the median wall time of its jobs: on small models a job's fixed cost
(interpreter start-up, imports, model and tokenizer loading; bench/evaljobs.py measures it
apart from the work) is most of it, so a regression there shows in that column.

SFT jobs also bring their tokens from their run.json: real (the rows' own tokens) and
processed (with the padding of each micro-batch); padding efficiency = real / processed,
the share of the training forward passes that was not padding (train.micro_batch_tokens
raises it on mixed lengths).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from ordermerge import warm


def purpose(rule: str, rel: Path) -> str:
    parts = rel.parts
    if rule == "base":
        return "shared (base models)"
    if "multitask" in parts[:2]:
        return "Table 3"
    # the figures' scores and curves, and Figure 1's controls (their orders and runs)
    if rule in ("score", "curve") or any(p.startswith("control-") for p in parts):
        return "Figures 1, 3, 4"
    if rule == "general_eval":
        return "Table 5"
    if "fix-batch" in parts:
        return "Table 4"
    return "Table 1"


TOKENS = ["real_tokens", "processed_tokens"]


def sft_tokens(sft_root: Path, rel: Path) -> dict[str, int]:
    """Real and processed tokens of the SFT job whose benchmark is `rel` (sft/<run>.tsv),
    from <sft_root>/<run>/run.json."""
    f = sft_root / rel.relative_to("sft").with_suffix("") / "run.json"
    try:
        run = json.loads(f.read_text())
        return {k: int(run[k]) for k in TOKENS}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{f}: no real_tokens/processed_tokens of the SFT job benchmarked in "
                         f"{rel} ({type(e).__name__}: {e})") from None


def job_log(logs_root: str | Path, rel: Path) -> Path:
    """The log of the job whose benchmark is `rel` (relative to the benchmarks' directory):
    the rules' log paths mirror their benchmark paths."""
    return Path(logs_root) / rel.with_suffix(".log")


def read_benchmarks(root: str | Path, sft_root: str | Path | None = None,
                    logs_root: str | Path | None = None) -> pd.DataFrame:
    """One row per job: rule, purpose, path, wall_s, cpu_s, and with `sft_root` (the SFT
    runs' directory) the SFT jobs' real and processed tokens. With `logs_root` (results/logs,
    whose log paths mirror the benchmarks'), cpu_s adds a warm-forked job's own CPU time."""
    root = Path(root)
    rows = []
    for f in sorted(root.rglob("*.tsv")):
        rel = f.relative_to(root)
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        with open(f, newline="") as fh:
            recs = list(csv.DictReader(fh, delimiter="\t"))
        if not recs or "s" not in recs[0]:
            raise ValueError(f"{f}: not a Snakemake benchmark file (no 's' column)")
        last = recs[-1]  # repeats: the last
        cpu = last.get("cpu_time", "")
        tokens = (sft_tokens(Path(sft_root), rel) if sft_root is not None and rule == "sft"
                  else dict.fromkeys(TOKENS, 0))
        cpu_s = float(cpu) if cpu not in ("", "NA", "-") else float("nan")
        forked = warm.usage_cpu_s(job_log(logs_root, rel)) if logs_root is not None else None
        rows.append({"rule": rule, "purpose": purpose(rule, rel), "path": str(rel),
                     "wall_s": float(last["s"]), "cpu_s": cpu_s + (forked or 0.0), **tokens})
    return pd.DataFrame(rows, columns=["rule", "purpose", "path", "wall_s", "cpu_s", *TOKENS])


def grouped_sums(jobs: pd.DataFrame, keys, cols: list[str], **medians: str) -> pd.DataFrame:
    """One row per value of each of `keys` ("<key>: <value>"), then "total": the jobs, the
    median of each `medians` column (name=column), and the sums of `cols`."""
    out = []
    for key in keys:
        g = jobs.groupby(key, sort=True)
        part = g[cols].sum()
        part.insert(0, "jobs", g.size())
        for at, (name, col) in enumerate(medians.items(), 1):
            part.insert(at, name, g[col].median())
        part.index = [f"{key}: {i}" for i in part.index]
        out.append(part)
    total = pd.DataFrame([[len(jobs), *(jobs[c].median() for c in medians.values()),
                           *jobs[cols].sum()]],
                         columns=["jobs", *medians, *cols], index=["total"])
    return pd.concat(out + [total])


def cost_table(jobs: pd.DataFrame, resources: dict[str, dict],
               stage_of: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows per rule group, then per purpose, then the total: jobs, wall hours, allocated
    and measured CPU-hours, GPU-hours, the SFT jobs' real and processed tokens and padding
    efficiency (empty where a row has no SFT job). `resources`: stage -> {cpus, gpus};
    `stage_of`: benchmark directory (a rule's name) -> its stage (ordermerge.plan
    BENCHMARK_STAGES; any other counts as "default")."""
    stage_of = stage_of or {}

    def alloc(rule, key):
        stage = stage_of.get(rule, "default")
        return (resources.get(stage) or resources.get("default") or {}).get(key) or 0
    jobs = jobs.copy()
    jobs["cpu_h_alloc"] = [w * max(alloc(r, "cpus"), 1) / 3600 for w, r in zip(jobs["wall_s"], jobs["rule"])]
    jobs["gpu_h"] = [w * alloc(r, "gpus") / 3600 for w, r in zip(jobs["wall_s"], jobs["rule"])]
    jobs["wall_h"] = jobs["wall_s"] / 3600
    jobs["cpu_h_measured"] = jobs["cpu_s"] / 3600
    cols = ["wall_h", "cpu_h_alloc", "cpu_h_measured", "gpu_h", *TOKENS]
    table = grouped_sums(jobs, ("rule", "purpose"), cols, median_job_s="wall_s")
    processed = table["processed_tokens"].where(table["processed_tokens"] > 0)
    table["padding_efficiency"] = table["real_tokens"] / processed
    return table


def to_markdown(table: pd.DataFrame) -> str:
    lines = ["| | jobs | median s/job | wall h | CPU h (allocated) | CPU h (measured) | GPU h | SFT padding efficiency |",
             "|---|---|---|---|---|---|---|---|"]
    for row, r in table.iterrows():
        eff = "" if pd.isna(r["padding_efficiency"]) else f"{r['padding_efficiency']:.3f}"
        lines.append(f"| {row} | {int(r['jobs'])} | {r['median_job_s']:.1f} | {r['wall_h']:.4f} | "
                     f"{r['cpu_h_alloc']:.4f} | {r['cpu_h_measured']:.4f} | {r['gpu_h']:.4f} | {eff} |")
    return "\n".join(lines) + "\n"
