"""Merging K sub-models: the methods (one registry, methods.py), their ids, and the engine
that applies them (engine.py).

A method id names a method with its settings, so that a path carrying it changes when the
settings change: ``avg``, ``select-s3``, ``resample-n4-s3``, ``ties-d0.2-l1.0``.

This package marker imports nothing: a job that reads checkpoints without merging (the
multi-task alignment) then does not depend on the registry (see ordermerge/plan.py).
"""
