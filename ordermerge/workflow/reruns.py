"""What an edit reruns: for each package module, the rules whose jobs Snakemake reruns when
it is edited, read from the rules' declared scripts (stages.py, which the Snakefile holds
rules/*.smk to) and the scripts' import closures (codedeps.py). docs/reruns.md holds the
table (`python -m ordermerge.workflow.reruns`)."""
from __future__ import annotations

from ..merge.methods import METHODS
from .code import Code
from .codedeps import closure
from .common import LIB, PROJECT, REGISTRY_FILE
from .stages import shown_rules

# the rules that merge by a method (their code is the method's files and its registry entry)
MERGES = ("merge", "merge_seeds", "multitask_merge", "curve")


def rule_scripts() -> dict[str, str]:
    """rule -> the script its shell runs, in the workflow's order; a family of rules made in
    a loop once, by its placeholder name (figure{N}, table{N}, evaluate_multitask_{GROUP})."""
    return {name: r.script for name, r in shown_rules().items()}


def rerun_table() -> str:
    """Markdown: for each package module, the rules whose jobs Snakemake reruns when it is
    edited (modules with the same rules share a row). A merge method's own module reruns
    only that method's merges (and their evaluations, tables and curves)."""
    scripts = rule_scripts()
    modules = sorted(p.relative_to(LIB).as_posix() for p in LIB.rglob("*.py"))
    # the curve of the runs themselves ("single") has no method entry: it takes the registry
    # whole, so curve is listed in full for it
    merges = [r for r in MERGES if r in scripts and r != "curve"]
    reruns: dict[str, list[str]] = {}
    for mod in modules:
        f = LIB / mod
        rules = [r for r, s in scripts.items() if f in closure(PROJECT / "scripts" / s)
                 and not (r in merges and f == REGISTRY_FILE)]
        methods = [n for n in METHODS if f in Code.method_files(n)]
        if f == REGISTRY_FILE:
            rules.append(f"{', '.join(merges)}: the merges of the methods whose entries changed only")
        elif methods and "merge" not in rules:
            rules.append(f"{', '.join(r for r in MERGES if r in scripts)}: the merges of "
                         f"{', '.join(methods)} only")
        reruns[mod] = rules
    rows: dict[str, list[str]] = {}
    for mod, rules in reruns.items():
        key = ", ".join(rules) if len(rules) < len(scripts) else "every rule"
        rows.setdefault(key or "none (no rule's script imports it)", []).append(mod)
    lines = ["| modules (ordermerge/) | rules whose jobs rerun |", "|---|---|"]
    for key, mods in sorted(rows.items(), key=lambda kv: (-len(kv[0].split(",")), kv[1])):
        lines.append(f"| {', '.join(f'`{m}`' for m in mods)} | {key} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse
    argparse.ArgumentParser(
        prog="python -m ordermerge.workflow.reruns",
        description="Print, as Markdown, which rules' jobs rerun when each module of the "
                    "package is edited, read from the rules' declared scripts "
                    "(ordermerge/workflow/stages.py) and the sources (the table of "
                    "docs/reruns.md).").parse_args()
    print(rerun_table(), end="")
