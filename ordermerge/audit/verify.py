"""Checks of a chain of records against the files on disk, each other, the code and the config.

Kinds of problem, each naming the file and the record that disagree:

- ``tampered``: a file's bytes differ from the sha256 its producer recorded (or a source file
  outside the workflow differs from what its consumer read);
- ``stale``: a consumer recorded an input hash that is not its producer's current output hash
  (the producer was re-run and the consumer was not);
- ``missing``: a record or a file that a record names is not there;
- ``code``: the record's commit differs from the current source of the library files that
  the rule declares as inputs (or the commit is unknown);
- ``dirty``: the result was made from a working tree with uncommitted changes;
- ``params``: the record's params differ from what the current config gives the job, or the
  current workflow does not make this output at all.
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..utils import sha256_file
from .chain import Chain
from .jobs import DryRunError, Job, job_for, jobs_by_output

KINDS = ("tampered", "stale", "missing", "code", "dirty", "params")


@dataclass(frozen=True)
class Problem:
    kind: str
    file: str  # the file (or output) at fault
    record: str  # the record that disagrees with it
    message: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "file": self.file, "record": self.record, "message": self.message}


class Hasher:
    """sha256 of files under `root`, each once; a file whose size and mtime equal a recorded
    entry takes the recorded hash unless `rehash`. Long runs show progress on stderr."""

    def __init__(self, root: Path, rehash: bool = False, progress: bool | None = None):
        self.root, self.rehash = root, rehash
        self.cache: dict[Path, str] = {}
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.done = self.total = 0
        self.last = 0.0

    def needs_hash(self, file: Path, entry: dict | None) -> bool:
        if file in self.cache:
            return False
        if self.rehash or not entry or "mtime_ns" not in entry:
            return True
        st = (self.root / file).stat()
        return (st.st_size, st.st_mtime_ns) != (entry.get("size"), entry.get("mtime_ns"))

    def plan(self, files: list[Path]) -> None:
        self.total += sum((self.root / f).stat().st_size for f in set(files))

    def sha(self, file: Path, entry: dict | None = None) -> str:
        if not self.needs_hash(file, entry):
            return self.cache.get(file) or entry["sha256"]
        h = sha256_file(self.root / file)
        self.cache[file] = h
        self.done += (self.root / file).stat().st_size
        if self.progress and self.total > 0 and time.monotonic() - self.last > 0.5:
            self.last = time.monotonic()
            print(f"\raudit: hashed {self.done / 1e9:.2f} of {self.total / 1e9:.2f} GB "
                  f"({100 * self.done / self.total:.0f}%)", end="", file=sys.stderr, flush=True)
        return h

    def finish(self) -> None:
        if self.progress and self.done:
            print(f"\raudit: hashed {self.done / 1e9:.2f} GB{' ' * 20}", file=sys.stderr)


def check_files(chain: Chain, hasher: Hasher) -> list[Problem]:
    """tampered / missing / stale, from the records and the files alone."""
    root, out = chain.root, []
    for rec in chain.unreadable:
        out.append(Problem("missing", str(rec[0]), str(rec[0]), rec[1]))
    for consumer, f in chain.missing:
        out.append(Problem("missing", str(f), str(consumer),
                           f"{f}: no provenance record of its producer (read by {consumer})"))
    todo = []  # (file, entry, record) to check against the producer's record
    for path, rec in chain.records.items():
        for f, entry in rec.output_files().items():
            if not (root / f).is_file():
                out.append(Problem("missing", str(f), str(path),
                                   f"{f}: missing, but {path} records it as an output"))
            else:
                todo.append((f, entry, path))
    sources = {}  # source file outside the workflow -> (sha recorded by a consumer, consumer)
    no_record = set(chain.missing)
    for consumer, edges in chain.edges.items():
        for e in edges:
            if e.producer is None and (consumer, e.file) not in no_record:
                sources.setdefault(e.file, (e.sha256, consumer))
    for f, (_sha, consumer) in sources.items():
        if not (root / f).is_file():
            out.append(Problem("missing", str(f), str(consumer),
                               f"{f}: source file missing (read by {consumer})"))
    hasher.plan([f for f, entry, _ in todo if hasher.needs_hash(f, entry)]
                + [f for f in sources if (root / f).is_file()])
    for f, entry, path in todo:
        if hasher.sha(f, entry) != entry.get("sha256"):
            out.append(Problem("tampered", str(f), str(path),
                               f"{f}: bytes differ from the sha256 in {path} "
                               f"({entry.get('sha256', '?')[:12]}; changed since "
                               f"{chain.records[path].data.get('end', '?')})"))
    for f, (sha, consumer) in sources.items():
        if (root / f).is_file() and hasher.sha(f) != sha:
            out.append(Problem("tampered", str(f), str(consumer),
                               f"{f}: source file differs from what {consumer} read ({sha[:12]})"))
    hasher.finish()
    for consumer, edges in chain.edges.items():
        for e in edges:
            if e.producer is None or e.producer not in chain.records:
                continue
            prod = chain.records[e.producer]
            entry = prod.output_files().get(e.file)
            if entry is None:
                out.append(Problem("stale", str(e.file), str(consumer),
                                   f"{consumer} read {e.file}, which its producer's record "
                                   f"{e.producer} no longer lists"))
            elif entry.get("sha256") != e.sha256:
                out.append(Problem("stale", str(e.file), str(consumer),
                                   f"{consumer} read {e.file} as {e.sha256[:12]}; its producer "
                                   f"({prod.rule}, {e.producer}) now records "
                                   f"{entry.get('sha256', '?')[:12]}, made {prod.data.get('end', '?')}"
                                   f": re-run the consumer"))
    return out


def _git(root: Path, *args: str, stdin: str | None = None) -> str | None:
    try:
        p = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                           input=stdin, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout if p.returncode == 0 else None


class CodeCheck:
    """Whether the library files a rule declares are what they were at a record's commit:
    blob ids at the commit (git ls-tree) against the working files' (git hash-object)."""

    def __init__(self, root: Path):
        self.root = root
        self.cache: dict[tuple, list[str] | None] = {}

    def changed(self, commit: str, files: tuple[str, ...]) -> list[str] | None:
        """Files that differ from `commit` (None: the commit is not in this repository)."""
        key = (commit, files)
        if key not in self.cache:
            if _git(self.root, "cat-file", "-e", f"{commit}^{{commit}}") is None:
                self.cache[key] = None
            else:
                tree = _git(self.root, "ls-tree", "-r", commit, "--", *files) or ""
                then = {line.split("\t", 1)[1]: line.split()[2] for line in tree.splitlines()}
                now = (_git(self.root, "hash-object", "--stdin-paths", stdin="\n".join(files)) or "").split()
                self.cache[key] = [f for f, h in zip(files, now) if then.get(f) != h]
        return self.cache[key]


def check_workflow(chain: Chain, jobs: dict[str, Job], results: str = "results") -> list[Problem]:
    """code / dirty / params: each record against the job the current workflow would run."""
    out, code = [], CodeCheck(chain.root)
    for path, rec in chain.records.items():
        job = job_for(jobs, rec.output)
        if job is None:
            out.append(Problem("params", str(rec.output), str(path),
                               f"{rec.output}: the current workflow and config do not make it "
                               f"(a result of another config?)"))
            continue
        if job.rule != rec.rule:
            out.append(Problem("params", str(rec.output), str(path),
                               f"{path}: made by rule {rec.rule}, the workflow now makes it "
                               f"with {job.rule}"))
        params = rec.data.get("params")
        if job.given_params is not None and params != job.given_params:
            diff = _diff(params or {}, job.given_params)
            out.append(Problem("params", str(rec.output), str(path),
                               f"{path}: params differ from the current config's: {diff}"))
        info = rec.data.get("code") or {}
        lib = tuple(sorted(i for i in job.inputs
                           if Path(i).parts[:1] != (results,) and (chain.root / i).is_file()))
        if not info.get("commit"):
            out.append(Problem("code", str(rec.output), str(path),
                               f"{path}: no code commit recorded (made outside a git checkout)"))
        elif lib:
            changed = code.changed(info["commit"], lib)
            if changed is None:
                out.append(Problem("code", str(rec.output), str(path),
                                   f"{path}: made by commit {info['commit'][:10]}, which is not "
                                   f"in this repository"))
            elif changed:
                out.append(Problem("code", str(rec.output), str(path),
                                   f"{path}: made by commit {info['commit'][:10]}; the rule's "
                                   f"code has changed since: {', '.join(changed)}"))
        if info.get("dirty"):
            out.append(Problem("dirty", str(rec.output), str(path),
                               f"{path}: made from a working tree with uncommitted changes "
                               f"(commit {str(info.get('commit'))[:10]})"))
    return out


def _diff(have: dict, want: dict, prefix: str = "") -> str:
    parts = []
    for k in sorted(set(have) | set(want), key=str):
        a, b = have.get(k, "<absent>"), want.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            sub = _diff(a, b, f"{prefix}{k}.")
            if sub:
                parts.append(sub)
        elif a != b:
            parts.append(f"{prefix}{k}: recorded {a!r}, config gives {b!r}")
    return "; ".join(parts)


def verify(chain: Chain, configfiles: list[str] = (), rehash: bool = False,
           progress: bool | None = None, results: str = "results") -> list[Problem]:
    problems = check_files(chain, Hasher(chain.root, rehash, progress))
    targets = [str(chain.records[r].output) for r in chain.top if r in chain.records]
    try:
        jobs = jobs_by_output(chain.root, targets, configfiles)
    except DryRunError as e:
        said = "snakemake cannot plan these outputs under the current config:\n" + "\n".join(e.tail)
        return problems + [Problem("params", ", ".join(targets), str(chain.top[0]), said)]
    return problems + check_workflow(chain, jobs, results)


def summary(problems: list[Problem]) -> dict[str, int]:
    return {k: sum(p.kind == k for p in problems) for k in KINDS if any(p.kind == k for p in problems)}


__all__ = ["KINDS", "Problem", "Hasher", "check_files", "check_workflow", "verify", "summary"]
