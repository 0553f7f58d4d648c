"""What the current workflow and config would run for some outputs: each job's rule, inputs
and params, read from a forced Snakemake dry run (``snakemake -n -F -p``), the same view
the workflow itself has. The library knows nothing of Snakemake otherwise; this module
only runs it as a command and reads what it prints."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..dryrun import DryJob as Job, parse_dry_run  # noqa: F401  (Job: the audit's name)


class PlanError(RuntimeError):
    """Snakemake could not plan the outputs under the current config."""


def plan(root: Path, targets: list[str], configfiles: list[str] = (),
         timeout: int = 600) -> dict[str, Job]:
    """Output path -> the job that makes it, for `targets` and everything upstream."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "-F", "-p", "--nocolor", "--cores", "1",
           *[a for f in configfiles for a in ("--configfile", str(f))], "--", *targets]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
        raise PlanError(f"snakemake cannot plan these outputs under the current config:\n{tail}")
    return {out: job for job in parse_dry_run(proc.stdout + proc.stderr) for out in job.outputs}


def job_for(jobs: dict[str, Job], output: Path) -> Job | None:
    """The job whose declared output is `output` or a directory holding it."""
    for p in (output, *output.parents):
        if str(p) in jobs:
            return jobs[str(p)]
    return None
