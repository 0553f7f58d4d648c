"""Jobs per minute through SLURM, with and without the profile's grouping of small jobs.

The workflow's smallest jobs are the data orders (one per task, scheme and run; seconds of
work each). This runs N of them through `--profile slurm` against a running cluster
(slurm/local/start.sh) in a throwaway copy of the project, twice per repeat, side by side:
as separate SLURM jobs (the profile without its `groups`) and as the profile has them
(`orders` groups of up to 20 jobs in one allocation). The figure is order jobs finished per
minute of wall time of the whole `snakemake` call (submission, scheduling, the job's own
Snakemake start inside the allocation, status polling every --poll seconds), and the
seconds each job costs beyond its own work.

    slurm/local/start.sh && python bench/slurm.py --jobs 20 --repeats 2

Prints the figures and writes results/bench/slurm.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from workflow_helpers import copy_project, env_with_python  # noqa: E402


def project(dest: Path, jobs: int) -> Path:
    """A copy of the project whose config has one toy task (config.yaml's gsm8k with fewer
    rows) and `jobs` runs."""
    copy_project(dest)  # its config.yaml without tasks, groups, Table 4 and figures
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    gsm8k = {**yaml.safe_load((ROOT / "config.yaml").read_text())["tasks"]["gsm8k"],
             "data": {"source": "toy", "n_train": 64, "n_validation": 8, "n_test": 8}}
    cfg.update(num_sub_models=jobs, tasks={"gsm8k": gsm8k})
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg))
    # the same profile without its groups: every order is its own SLURM job
    prof = yaml.safe_load((dest / "slurm/config.yaml").read_text())
    for key in ("groups", "group-components"):
        prof.pop(key, None)
    (dest / "slurm-ungrouped").mkdir()
    (dest / "slurm-ungrouped/config.yaml").write_text(yaml.safe_dump(prof))
    return dest


def snakemake(wd: Path, *args: str) -> float:
    """Wall seconds of one snakemake call; raises with its output when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(["timeout", "-s", "INT", "-k", "30", "3600", sys.executable, "-m",
                           "snakemake", *args], cwd=wd, env=env_with_python(),
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20, help="order jobs per measurement (20)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating measurements of each (2)")
    ap.add_argument("--poll", type=int, default=2,
                    help="seconds before the first job status check (2; the plugin's default "
                         "is 40, and it adds 10 s per later check in which no job ended)")
    ap.add_argument("--out", type=Path, default=ROOT / "results/bench/slurm.json",
                    help="where the figures go as JSON (results/bench/slurm.json)")
    args = ap.parse_args(argv)
    if shutil.which("sbatch") is None:
        raise SystemExit("no sbatch: start a cluster first (slurm/local/start.sh, as root)")

    with tempfile.TemporaryDirectory(prefix="ordermerge-bench-slurm-") as tmp:
        wd = project(Path(tmp) / "project", args.jobs)
        targets = [f"results/orders/gsm8k/shuffle/run{r}.json" for r in range(args.jobs)]
        # the orders' input, made locally: only the orders are measured
        snakemake(wd, "--cores", "1", "results/data/gsm8k/train.jsonl")
        # a job's own work: the orders made locally, one at a time
        local = snakemake(wd, "--cores", "1", *targets)
        poll = ("--slurm-init-seconds-before-status-checks", str(args.poll),
                "--seconds-between-status-checks", str(args.poll))
        walls: dict[str, list[float]] = {"ungrouped": [], "grouped": []}
        for _ in range(args.repeats):
            for kind, profile in (("ungrouped", "slurm-ungrouped"), ("grouped", "slurm")):
                shutil.rmtree(wd / "results/orders", ignore_errors=True)
                walls[kind].append(snakemake(wd, "--cores", "2", "--profile", profile, *poll,
                                             *targets))

    med = {k: statistics.median(v) for k, v in walls.items()}
    result = {
        "jobs": args.jobs, "repeats": args.repeats, "poll_s": args.poll,
        "local_serial_s": round(local, 2),
        "wall_s": {k: [round(x, 2) for x in v] for k, v in walls.items()},
        "jobs_per_min": {k: round(args.jobs * 60 / m, 2) for k, m in med.items()},
        "overhead_s_per_job": {k: round((m - local) / args.jobs, 2) for k, m in med.items()},
        "speedup_grouped": round(med["ungrouped"] / med["grouped"], 2),
        "host": os.uname().nodename, "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.jobs} order jobs, median of {args.repeats}; local, serial: {local:.1f} s")
    for k in ("ungrouped", "grouped"):
        print(f"  {k:9s}: {med[k]:6.1f} s  {result['jobs_per_min'][k]:6.1f} jobs/min  "
              f"{result['overhead_s_per_job'][k]:5.1f} s overhead per job")
    print(f"  grouped / ungrouped throughput: {result['speedup_grouped']:.2f}x")
    return result


if __name__ == "__main__":
    main()
