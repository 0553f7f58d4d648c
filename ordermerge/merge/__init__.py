"""Merging K sub-models: the methods, their ids, and the engine that applies them.

A method id names a method with its settings, so that a path carrying it
changes when the settings change: ``avg``, ``select-s3``, ``resample-n4-s3``.
"""
from __future__ import annotations

import re

# the source file of each method, relative to this package: a merge depends on it
METHOD_SOURCES = {
    "average": ("average.py", "fused.py"),
    "select": ("select.py", "rng.py", "fused.py"),
    "resample": ("resample.py", "select.py", "rng.py", "fused.py"),
}
ENGINE_SOURCES = ("__init__.py", "engine.py", "st_io.py")

_PATTERNS = {
    "average": re.compile(r"avg"),
    "select": re.compile(r"select-s(?P<seed>\d+)"),
    "resample": re.compile(r"resample-n(?P<rounds>\d+)-s(?P<seed>\d+)"),
}


def method_id(method: str, *, seed: int | None = None, rounds: int | None = None) -> str:
    if method == "average":
        return "avg"
    if method == "select":
        return f"select-s{seed}"
    if method == "resample":
        return f"resample-n{rounds}-s{seed}"
    raise ValueError(f"unknown merge method {method!r}; known: {sorted(METHOD_SOURCES)}")


def parse_method_id(mid: str) -> tuple[str, dict]:
    """``resample-n4-s3`` -> ("resample", {"rounds": 4, "seed": 3})."""
    for method, pat in _PATTERNS.items():
        m = pat.fullmatch(mid)
        if m:
            return method, {k: int(v) for k, v in m.groupdict().items()}
    raise ValueError(f"not a merge method id: {mid!r} (avg, select-s<seed>, "
                     f"resample-n<rounds>-s<seed>)")
