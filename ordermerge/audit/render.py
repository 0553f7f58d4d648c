"""A chain as a readable tree or as one JSON document, and the chain behind one table cell."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from .chain import AuditError, Chain, Edge, restrict

_WIDTH = 150


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _short(v: object) -> str:
    if isinstance(v, list):
        return f"[{len(v)} items]" if len(v) > 4 else "[" + ",".join(map(str, v)) + "]"
    return str(v)


def key_values(d: dict, skip: tuple[str, ...] = ()) -> str:
    text = " ".join(f"{k}={_short(v)}" for k, v in _flat(d) if k.split(".")[0] not in skip)
    return text if len(text) <= _WIDTH else text[:_WIDTH - 1] + "…"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def package_outliers(chain: Chain) -> dict[Path, dict[str, tuple[str, str]]]:
    """Per record, the packages whose version differs from the chain's most common one."""
    counts: dict[str, Counter] = {}
    for rec in chain.records.values():
        for name, v in (rec.data.get("packages") or {}).items():
            counts.setdefault(name, Counter())[v] += 1
    common = {name: c.most_common(1)[0][0] for name, c in counts.items()}
    out = {}
    for path, rec in chain.records.items():
        diff = {n: (v, common[n]) for n, v in (rec.data.get("packages") or {}).items()
                if v != common[n]}
        if diff:
            out[path] = diff
    return out


def node(chain: Chain, path: Path, outliers: dict) -> dict:
    rec = chain.records[path]
    files = rec.output_files()
    code = rec.data.get("code") or {}
    return {
        "record": str(path), "rule": rec.rule, "output": str(rec.output),
        "files": len(files), "bytes": sum(e.get("size", 0) for e in files.values()),
        # a stat each, no hashing: what is gone is shown even without --verify
        "missing_files": [str(f) for f in files if not (chain.root / f).exists()],
        "params": rec.data.get("params"), "derived": rec.data.get("derived", {}),
        "seeds": rec.data.get("seeds", {}), "code": code,
        "packages_differing": {n: v for n, (v, _) in outliers.get(path, {}).items()},
        "start": rec.data.get("start"), "end": rec.data.get("end"), "host": rec.data.get("host"),
        "inputs": [{"file": str(e.file), "sha256": e.sha256,
                    "producer": str(e.producer) if e.producer else None}
                   for e in chain.edges.get(path, [])],
    }


def as_json(chain: Chain, problems: list | None = None) -> dict:
    outliers = package_outliers(chain)
    doc = {"root": str(chain.root), "top": [str(t) for t in chain.top],
           "records": [node(chain, p, outliers) for p in chain.records]}
    if problems is not None:
        from .verify import summary
        doc["problems"] = [p.as_dict() for p in problems]
        doc["summary"] = summary(problems)
    return doc


def _headline(n: dict) -> str:
    what = f"{n['files']} files, {_size(n['bytes'])}" if n["record"].endswith("provenance.json") \
        else _size(n["bytes"])
    code = n["code"]
    commit = (code.get("commit") or "no commit")[:10] + (" +dirty" if code.get("dirty") else "")
    when = (n["end"] or "?")[:19].replace("T", " ")
    gone = n["missing_files"]
    if gone:
        what = (f"DELETED: {gone[0]}" + (f" and {len(gone) - 1} more of {n['files']} files"
                                         if len(gone) > 1 else "") + f"; recorded {what}")
    return f"{n['rule']}  {n['output']}  ({what}; {commit}; {when})"


def _details(n: dict, sources: list[Edge], missing: set[Path]) -> list[str]:
    lines = []
    if n["params"]:
        lines.append("params: " + key_values(n["params"]))
    derived = {k: v for k, v in n["derived"].items() if k not in ("records", "defaults", "source")}
    origin = n["derived"].get("source") or {}
    if "commit" in origin:
        lines.append(f"source: {origin['repo']} (hub) split {origin['split']} at commit "
                     f"{origin['commit']} (revision {origin['revision']})")
    elif "toy" in origin:
        lines.append(f"source: {origin['toy']}, seed {origin['seed']}")
    if derived:
        lines.append("derived: " + key_values(derived))
    if n["seeds"]:
        lines.append("seeds: " + key_values(n["seeds"]))
    if n["packages_differing"]:
        lines.append("packages differing from the chain: " + key_values(n["packages_differing"]))
    for e in sources:  # outside the workflow, or a workflow output whose record is gone
        lines.append(f"source: {e.file} sha256 {e.sha256[:16]}" + (
            "  (NO RECORD: a workflow output without its producer's record; the chain is cut "
            "off here)" if e.file in missing else ""))
    return lines


def tree(chain: Chain, problems: list | None = None) -> str:
    """The chain as an indented tree; a record met again is one line marked (above)."""
    outliers = package_outliers(chain)
    flagged: dict[str, list[str]] = {}
    for p in problems or []:
        flagged.setdefault(p.record, []).append(f"!! {p.kind}: {p.message}")
    seen: set[Path] = set()
    lines: list[str] = []

    def walk(path: Path, lead: str, branch: str, tail: str) -> None:
        if path not in chain.records:
            why = dict(chain.unreadable).get(path, "").removeprefix(f"{chain.root / path}: ")
            lines.append(f"{lead}{branch}{path}  (unreadable record{': ' + why if why else ''}; "
                         "the chain below it is cut off)")
            return
        n = node(chain, path, outliers)
        if path in seen:
            lines.append(f"{lead}{branch}{n['rule']}  {n['output']}  (above)")
            return
        seen.add(path)
        lines.append(lead + branch + _headline(n))
        kids = chain.children(path)
        inner = lead + tail
        cut = {f for r, f in chain.missing if r == path}
        for text in _details(n, chain.sources(path), cut) + flagged.get(str(path), []):
            lines.append(inner + ("│   " if kids else "    ") + text)
        for i, kid in enumerate(kids):
            last = i == len(kids) - 1
            walk(kid, inner, "└── " if last else "├── ", "    " if last else "│   ")

    for t in chain.top:
        walk(t, "", "", "")
    for p in problems or []:  # problems of records outside the tree (missing ones)
        if Path(p.record) not in chain.records and p.record not in {str(t) for t in chain.top}:
            lines.append(f"!! {p.kind}: {p.message}")
    return "\n".join(lines)


def gaps(chain: Chain) -> list[str]:
    """What the chain shown lacks, found without hashing: unreadable records (the chain is
    cut off there) and recorded output files that are gone; one line each."""
    out = [why for _rec, why in chain.unreadable]  # each names its record
    # a workflow output read by a record, whose own record is gone: the chain stops there
    out += [f"{f}: no provenance record of its producer (read by {rec})"
            for rec, f in chain.missing]
    for path, rec in chain.records.items():
        out += [f"{f}: deleted (recorded by {path})" for f in rec.output_files()
                if not (chain.root / f).exists()]
    return out


def cell(chain: Chain, task: str, row: str, block: str | None = None) -> Chain:
    """The part of a table's chain behind one cell: the evaluation records counted in
    (task, row), and everything upstream of them. `row` is the table's row label
    (resample, param-selection, "resample (fix-batch)") or a method name (select)."""
    from ..merge.methods import parse_method_id
    from ..report.tables import cells_of, read_records

    if len(chain.top) != 1 or not chain.records[chain.top[0]].rule.startswith("table"):
        raise AuditError("--cell works on a table (a CSV, Markdown or LaTeX table of the workflow)")
    top = chain.top[0]
    rec = chain.records[top]
    derived = rec.data.get("derived", {})
    if "table" not in derived:
        raise AuditError(f"{top}: the record does not say which table and records it holds "
                         f"(made before audits existed: re-run the table)")
    records = read_records([_under(chain.root, a) for a in derived["records"]], derived["table"])
    cells = cells_of(records, derived["table"])
    chosen, seen_cells = [], set()
    for r, (b, col, label) in zip(records, cells):
        seen_cells.add((b, col, label))
        method = ({"sft": "single", "base": "base", "ensemble": "ensemble"}.get(r["kind"])
                  or parse_method_id(r["name"])[0])
        if col == task and (label == row or method == row) and block in (None, b):
            chosen.append(Path(r["path"]).relative_to(chain.root))
    if not chosen:
        have = sorted({f"{c} / {r}" + (f" [{b}]" if b else "") for b, c, r in seen_cells})
        raise AuditError(f"no cell ({task}, {row}) in {top} (cells: {'; '.join(have)})")
    edges = [e for e in chain.edges[top] if e.file in set(chosen)]
    narrowed = Chain(root=chain.root, top=[top], records=chain.records,
                     edges={**chain.edges, top: edges}, missing=chain.missing,
                     unreadable=chain.unreadable)
    return restrict(narrowed, [top])


def _under(root: Path, arg: str) -> str:
    block, sep, path = arg.rpartition("=")
    return f"{block}{sep}{root / path}"
