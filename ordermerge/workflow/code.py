"""The plan's part that knows a rule's code: the script it runs and the package files that
script can depend on (its import closure, codedeps.py), a merge method's own files, and the
command every rule runs its script through.

A rule's code inputs are computed: editing one module reruns exactly the jobs whose results
it can change. A merge's code is its script's closure and its method's files from the merge
registry; the registry itself is not an input: the method's entry is a param of the job
instead, so editing one entry (or adding a method) reruns that method's merges only."""
from __future__ import annotations

from pathlib import Path

from ..merge.methods import get as merge_method, parse_method_id
from .codedeps import closure
from .common import LIB, PROJECT, REGISTRY_FILE, as_json, rel


class Code:
    @staticmethod
    def script(name: str) -> str:
        return rel(PROJECT / "scripts" / name)

    @staticmethod
    def code(script: str) -> list[str]:
        """The package files the results of `script` (in scripts/) can depend on: its import
        closure within the package."""
        return sorted(rel(f) for f in closure(PROJECT / "scripts" / script))

    def script_inputs(self, script: str) -> dict:
        """A rule's script and its code (inputs: editing either reruns the rule's jobs)."""
        return {"script": self.script(script), "lib": self.code(script)}

    @staticmethod
    def method_files(name: str) -> set[Path]:
        """The files of merge method `name`'s arithmetic: its module (loaded by name), what
        that imports, its helpers; not the registry (see merge_code)."""
        m = merge_method(name)
        return {f for s in m.sources for f in closure(LIB / "merge" / s)} - {REGISTRY_FILE}

    def merge_code(self, mid: str, script: str = "merge.py") -> list[str]:
        """A merge's code: the script's closure and its method's files, so that editing one
        method's source reruns only its merges; not the registry, whose entry for the method
        is a param of the job instead (`method_entry`), so that editing one entry (or adding
        a method) reruns that method's merges only."""
        files = set(closure(PROJECT / "scripts" / script)) - {REGISTRY_FILE}
        return sorted(rel(f) for f in files | self.method_files(parse_method_id(mid)[0]))

    @staticmethod
    def method_entry(wildcards, mid=None) -> str:
        """The registry entry of the merge's method (the {method} wildcard or `mid`), as JSON:
        what the job depends on in ordermerge/merge/methods.py."""
        mid = mid or wildcards.method
        if mid == "single":
            return ""
        return as_json(merge_method(parse_method_id(mid)[0]).entry())


    # how every rule runs its script: through the warm worker's client, which is plain
    # `python SCRIPT` wherever no warm worker serves the run (ordermerge/warm.py); by its
    # path, as the scripts are, so that the project need not be installed
    @property
    def py(self) -> str:
        return f"python {rel(LIB / 'warm.py')}"
