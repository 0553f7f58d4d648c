"""The one reader of a Snakemake dry run (`snakemake -n -p`): each job's rule, wildcards,
inputs, outputs, benchmark and shell command, as Snakemake prints them. The cost projection
(projection.py) and the audit's staleness check (audit/plan.py) both read jobs through it."""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field


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
