"""The one runner and reader of a Snakemake dry run (`snakemake -n -F -p`): each job's rule,
wildcards, inputs, outputs, benchmark and shell command, as Snakemake prints them. The cost
projection (projection.py) and the audit's staleness check (audit/jobs.py) both get their
jobs here. The library knows nothing of Snakemake otherwise: this module runs it as a
command and reads what it prints."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .config import PLAN_ONLY


class DryRunError(RuntimeError):
    """Snakemake could not plan the targets under the config (`tail`: its last lines)."""

    def __init__(self, workdir, tail: list[str]):
        super().__init__(f"snakemake dry run in {workdir} failed:\n" + "\n".join(tail))
        self.tail = tail


@dataclass
class DryJob:
    rule: str
    wildcards: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    benchmark: str | None = None
    command: str = ""

    def values(self, flag: str) -> list[str]:
        """The values its shell command gives `flag` (before the log redirection)."""
        words = shlex.split(self.command.split(" > ")[0]) if self.command else []
        return [b for a, b in zip(words, words[1:]) if a == flag]

    @property
    def given_params(self) -> dict | None:
        """The JSON after --params in its shell command; None when it has none."""
        given = self.values("--params")
        return json.loads(given[0]) if given else None

    def params(self) -> dict:
        """The job's --params JSON, {} when it has none."""
        return self.given_params or {}


_RULE = re.compile(r"^(?:local)?rule (\S+):$")
_FIELD = re.compile(r"^    (input|output|wildcards|benchmark): (.*)$")


def parse_dry_run(text: str) -> list[DryJob]:
    """The jobs of `snakemake -n -p` output (each job block: rule, fields, then its shell
    command)."""
    jobs: list[DryJob] = []
    job = None
    for line in text.splitlines():
        m = _RULE.match(line)
        if m:
            job = DryJob(m.group(1))
            jobs.append(job)
            continue
        if job is None:
            continue
        if line.startswith("Shell command: "):
            job.command = line.removeprefix("Shell command: ")
            continue
        m = _FIELD.match(line)
        if not m:
            continue
        key, value = m.groups()
        if key == "wildcards":
            job.wildcards = dict(kv.split("=", 1) for kv in value.split(", ") if "=" in kv)
        elif key == "benchmark":
            job.benchmark = value
        else:
            setattr(job, key + "s", [v for v in value.split(", ") if v])
    return jobs


# Every Snakemake process imports its SLURM executor plugin, which runs `scontrol show config`
# at import: where a SLURM client is installed but no controller answers (a machine after
# slurm/local/stop.sh), that waits 9 s, up to the plugin's 10 s timeout. A process that
# never submits to SLURM (the plan's dry run, the tests' local runs) points SLURM_CONF at
# /dev/null: scontrol then fails at once and the plugin carries on without the value.
NO_SLURM = {"SLURM_CONF": "/dev/null"}


def dry_run(workdir: str | os.PathLike, configfiles=(), targets=(),
            timeout: float | None = None) -> list[DryJob]:
    """Every job that makes `targets` (default the workflow's) and everything upstream, as
    if no output existed (--forceall), under the workflow in `workdir` and `configfiles`.
    Only the plan is made: this machine's own checks (a vLLM Python, a local data file) are
    not asked for (PLAN_ONLY), as the plan may be for another machine. Snakemake is the one
    of this Python's environment (its bin/ first on PATH, for the rules' own commands)."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--forceall", "--printshellcmds",
           "--nocolor", "--cores", "1",
           # one --configfile with every file: a second --configfile replaces the first
           *(["--configfile", *map(str, configfiles)] if configfiles else []), "--", *targets]
    env = {**os.environ, PLAN_ONLY: "1", **NO_SLURM,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env=env)
    if proc.returncode != 0:
        raise DryRunError(workdir, (proc.stdout + proc.stderr).strip().splitlines()[-12:])
    return [j for j in parse_dry_run(proc.stdout + "\n" + proc.stderr) if j.rule != "all"]
