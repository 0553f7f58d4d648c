"""The package modules a script's results can depend on: the closure of its imports within
``ordermerge``, read from the source (every ``import`` statement, at module level or inside a
function), so that a rule's code inputs are computed rather than listed by hand.

Importing ``ordermerge.a.b`` runs ``ordermerge/__init__.py`` and ``ordermerge/a/__init__.py``
first: those count too. A module imported by name at run time (``importlib``; the merge
registry loads a method's module so) is not seen here: the registry names a method's module
(``Method.sources``) and the workflow reads that module's imports
(``ordermerge.workflow.plan.Plan.merge_code``).
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "ordermerge"
ROOT = Path(__file__).resolve().parents[1]  # the package's directory (this file is in workflow/)


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of module `name` (dotted, starting with the package), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for f in (base / "__init__.py", base.with_suffix(".py")):
        if f.is_file():
            return f
    return None


def _module_name(f: Path, root: Path) -> str:
    rel = f.relative_to(root).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imported(f: Path, root: Path) -> frozenset[str]:
    """The package modules the file `f` imports (and the packages above them). Parsed once
    per version of the file (its modification time and size key the cache): the closures of
    a workflow's scripts share most of their modules, and parsing each again for every
    closure was most of the time Snakemake took to read the workflow."""
    st = f.stat()
    return _parsed_imports(f.resolve(), root, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=None)
def _parsed_imports(f: Path, root: Path, mtime_ns: int, size: int) -> frozenset[str]:
    inside = f.is_relative_to(root)
    if inside:
        me = _module_name(f, root)
        package = me if f.name == "__init__.py" else me.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not inside:
                    continue
                up = package.split(".")
                base = ".".join(up[:len(up) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            names.add(mod)
            # `from package import submodule` imports the submodule
            names.update(f"{mod}.{a.name}" for a in node.names)
    out = set()
    for n in names:
        for m in _with_parents(n):
            if module_file(m, root) is not None:
                out.add(m)
    return frozenset(out)


@functools.lru_cache(maxsize=None)
def closure(script: str | Path, root: Path = ROOT) -> tuple[Path, ...]:
    """Every package file `script` (a file inside the package or out) reaches by imports,
    sorted; a file of the package includes itself."""
    script = Path(script).resolve()
    todo = [script]
    seen: set[Path] = set()
    if script.is_relative_to(root):
        seen.add(script)
    done: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in done:
            continue
        done.add(f)
        for m in _imported(f, root):
            g = module_file(m, root).resolve()
            seen.add(g)
            todo.append(g)
    return tuple(sorted(seen))
