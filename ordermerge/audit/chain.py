"""The chain of provenance records behind a result.

Every output of the workflow carries a record (ordermerge.provenance): its rule, params,
seeds, the sha256 of each input file and of each output file, the code commit and the
package versions. A record's inputs name files; the producer of an input file is the record
of that file (its sidecar ``<file>.prov.json``) or of the directory output that holds it
(``<dir>/provenance.json``). Following inputs to producers from any output gives its chain,
down to the prepared data (whose record names the dataset source) and the base model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..provenance import RECORD_NAME, SIDECAR_SUFFIX

# Snakemake's marker in directory outputs: touched after the job, never a result
IGNORED = {".snakemake_timestamp"}


class AuditError(ValueError):
    """The path to audit has no record, or a record cannot be read."""


@dataclass
class Record:
    path: Path  # the record file, relative to the project root
    data: dict

    @property
    def rule(self) -> str:
        return self.data.get("rule", "?")

    @property
    def output(self) -> Path:
        return Path(self.data.get("output", ""))

    @property
    def is_dir(self) -> bool:
        return self.path.name == RECORD_NAME

    def output_files(self) -> dict[Path, dict]:
        """Each output file (relative to the project root) -> its recorded sha256/size/mtime."""
        outs = self.data.get("outputs", {})
        if self.is_dir:
            return {self.output / rel: e for rel, e in outs.items()}
        return {self.output: e for e in outs.values()}


@dataclass
class Edge:
    file: Path  # an input file as the consumer recorded it
    sha256: str  # the hash the consumer recorded
    producer: Path | None  # the producer's record, None for a source outside the workflow


@dataclass
class Chain:
    root: Path
    top: list[Path]  # the records asked about
    records: dict[Path, Record] = field(default_factory=dict)
    edges: dict[Path, list[Edge]] = field(default_factory=dict)  # consumer record -> inputs
    missing: list[tuple[Path, Path]] = field(default_factory=list)  # (consumer, input file)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    def children(self, rec: Path) -> list[Path]:
        """The producers of `rec`'s inputs, in input order, once each."""
        return list(dict.fromkeys(e.producer for e in self.edges.get(rec, []) if e.producer))

    def sources(self, rec: Path) -> list[Edge]:
        return [e for e in self.edges.get(rec, []) if e.producer is None]

    def consumers(self, rec: Path) -> list[Path]:
        return [c for c, es in self.edges.items() if any(e.producer == rec for e in es)]


def load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: JSON, and bytes that are not UTF-8
        raise AuditError(f"{path}: not a readable provenance record ({e})") from None
    if not isinstance(data, dict) or "rule" not in data or "outputs" not in data:
        raise AuditError(f"{path}: not a provenance record (no rule/outputs)")
    why = _malformed(data)
    if why:
        raise AuditError(f"{path}: not a readable provenance record ({why})")
    return data


def _malformed(data: dict) -> str | None:
    """What in a record's fields the chain cannot follow (an edited or foreign record)."""
    for key in ("rule", "output"):
        if key in data and not isinstance(data[key], str):
            return f"{key!r} is {type(data[key]).__name__}, not a string"
    for key, entry in (("outputs", dict), ("inputs", str)):
        files = data.get(key, {})
        if not isinstance(files, dict):
            return f"{key!r} is {json.dumps(files)[:40]}, not an object of files"
        bad = next((f for f, e in files.items() if not isinstance(e, entry)), None)
        if bad is not None:
            return (f"{key!r}: {bad!r} maps to {json.dumps(files[bad])[:40]}, not "
                    + ("an object of sha256/size" if entry is dict else "a sha256 string"))
    return None


def record_of(root: Path, file: Path, results: str = "results") -> Path | None:
    """The record of the output holding `file` (relative to root): its sidecar, or the
    provenance.json of the nearest directory above it up to `results/`."""
    side = file.with_name(file.name + SIDECAR_SUFFIX)
    if (root / side).is_file():
        return side
    for parent in file.parents:
        if parent == Path(".") or parent == Path(results):
            break
        if (root / parent / RECORD_NAME).is_file():
            return parent / RECORD_NAME
    return None


def records_for(root: Path, target: Path) -> list[Path]:
    """The records describing `target`: its own, or for a directory without one, every
    record under it (e.g. an SFT run: its checkpoints and logs)."""
    target = Path(target)
    if target.is_absolute():
        try:
            target = target.relative_to(root.resolve())
        except ValueError:
            raise AuditError(f"{target} is not under the project directory {root}") from None
    full = root / target
    if not full.exists():
        raise AuditError(f"{target}: no such file or directory (under {root})")
    if full.is_dir() and (full / RECORD_NAME).is_file():
        return [target / RECORD_NAME]
    if full.is_file():
        rec = record_of(root, target)
        if rec is None:
            raise AuditError(f"{target}: no provenance record (looked for {target.name}"
                             f"{SIDECAR_SUFFIX} and {RECORD_NAME} in the directories above)")
        return [rec]
    found = sorted(p.relative_to(root) for p in full.rglob("*")
                   if p.name == RECORD_NAME or p.name.endswith(SIDECAR_SUFFIX))
    if not found:
        raise AuditError(f"{target}: a directory without provenance records")
    return found


def build(root: Path, top: list[Path], results: str = "results") -> Chain:
    """Every record reachable from `top` through the inputs they name."""
    root = Path(root)
    chain = Chain(root=root, top=list(top))
    todo, visited = list(top), set()
    while todo:
        rec = todo.pop()
        if rec in visited:
            continue
        visited.add(rec)
        try:
            chain.records[rec] = r = Record(rec, load(root / rec))
        except AuditError as e:
            chain.unreadable.append((rec, str(e)))
            continue
        edges = []
        for f, sha in r.data.get("inputs", {}).items():
            f = Path(f)
            if f.name in IGNORED or f.name == RECORD_NAME or f.name.endswith(SIDECAR_SUFFIX):
                continue
            producer = record_of(root, f, results)
            if producer is None and f.parts[:1] == (results,):
                chain.missing.append((rec, f))
            edges.append(Edge(f, sha, producer))
            if producer is not None and producer not in visited:
                todo.append(producer)
        chain.edges[rec] = edges
    return chain


def restrict(chain: Chain, top: list[Path]) -> Chain:
    """The part of `chain` reachable from `top` (records of the chain)."""
    reached: list[Path] = []  # records of the chain and unreadable ones alike
    todo = list(top)
    while todo:
        rec = todo.pop()
        if rec in reached:
            continue
        reached.append(rec)
        todo.extend(chain.children(rec))
    keep = [r for r in reached if r in chain.records]
    out = Chain(root=chain.root, top=list(top))
    for rec in keep:
        out.records[rec] = chain.records[rec]
        out.edges[rec] = chain.edges.get(rec, [])
    out.missing = [(c, f) for c, f in chain.missing if c in out.records]
    out.unreadable = [(r, m) for r, m in chain.unreadable if r in reached]
    return out
