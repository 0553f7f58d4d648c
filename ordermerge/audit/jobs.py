"""What the current workflow and config would run for some outputs: each job's rule, inputs
and params, from a forced Snakemake dry run (workflow/dryrun.py), the same view the workflow
itself has."""
from __future__ import annotations

from pathlib import Path

from ..workflow.dryrun import DryJob as Job, DryRunError, dry_run  # noqa: F401  (Job: the audit's name)


def jobs_by_output(root: Path, targets: list[str], configfiles: list[str] = (),
                   timeout: int = 600) -> dict[str, Job]:
    """Output path -> the job that makes it, for `targets` and everything upstream (raises
    DryRunError where Snakemake cannot plan them under the current config)."""
    return {out: job for job in dry_run(root, configfiles, targets, timeout=timeout)
            for out in job.outputs}


def job_for(jobs: dict[str, Job], output: Path) -> Job | None:
    """The job whose declared output is `output` or a directory holding it."""
    for p in (output, *output.parents):
        if str(p) in jobs:
            return jobs[str(p)]
    return None
