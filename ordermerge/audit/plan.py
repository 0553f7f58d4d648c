"""What the current workflow and config would run for some outputs: each job's rule, inputs
and params, read from a forced Snakemake dry run (``snakemake -n -F -p``), the same view
the workflow itself has. The library knows nothing of Snakemake otherwise; this module
only runs it as a command and reads what it prints."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


class PlanError(RuntimeError):
    """Snakemake could not plan the outputs under the current config."""


@dataclass
class Job:
    rule: str
    inputs: list[str]
    outputs: list[str]
    params: dict | None  # the JSON after --params in the shell command, None if absent


_BLOCK = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", re.M)
_FIELD = re.compile(r"^    (\w+): (.*)$", re.M)
_SHELL = re.compile(r"^Shell command: (.*)$", re.M)


def parse_dry_run(text: str) -> list[Job]:
    """Jobs of `snakemake -n -p` output (each job block: rule, fields, then its shell command)."""
    jobs = []
    blocks = list(_BLOCK.finditer(text))
    for i, m in enumerate(blocks):
        fields = dict(_FIELD.findall(m.group(2)))
        end = blocks[i + 1].start() if i + 1 < len(blocks) else len(text)
        shell = _SHELL.search(text, m.end(), end)
        params = None
        if shell:
            argv = shlex.split(shell.group(1))
            if "--params" in argv:
                params = json.loads(argv[argv.index("--params") + 1])
        split = lambda key: [s for s in fields.get(key, "").split(", ") if s]  # noqa: E731
        jobs.append(Job(m.group(1), split("input"), split("output"), params))
    return jobs


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
