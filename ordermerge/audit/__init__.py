"""Audit a result: the chain of provenance records behind it, back to its data, and checks of
every hash, input, code version and param in that chain (ordermerge audit)."""
from .chain import AuditError, Chain, build, records_for, restrict
from .render import as_json, cell, gaps, tree
from .verify import KINDS, Problem, summary, verify

__all__ = ["AuditError", "Chain", "build", "records_for", "restrict", "as_json", "cell", "gaps", "tree",
           "KINDS", "Problem", "summary", "verify"]
