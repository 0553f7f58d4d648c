"""What every part of the plan shares: its error, and how paths and params are written."""
from __future__ import annotations

import json
import os
import re

from .codedeps import ROOT as LIB

PROJECT = LIB.parent
# the merge registry: a merge depends on its method's entry (a param), not on this file
REGISTRY_FILE = LIB / "merge" / "methods.py"


class PlanError(ValueError):
    """A config the checks let through but that no workflow can be planned from (named)."""


def as_json(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def one_of(names) -> str:
    return "|".join(map(re.escape, names))


def rel(path: str | os.PathLike) -> str:
    """`path` relative to the working directory: moving the project does not change every
    rule's set of inputs (which would rerun everything)."""
    return os.path.relpath(path)
