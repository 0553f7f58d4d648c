"""Merging K sub-models: the methods (one registry, methods.py), their ids, and the engine
that applies them.

A method id names a method with its settings, so that a path carrying it changes when the
settings change: ``avg``, ``select-s3``, ``resample-n4-s3``, ``ties-d0.2-l1.0``.
"""
from __future__ import annotations

from .methods import METHODS, get, id_pattern, method_id, parse_method_id, seeded_row_pattern

__all__ = ["METHODS", "get", "id_pattern", "method_id", "parse_method_id", "seeded_row_pattern"]
