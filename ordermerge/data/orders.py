"""Data orders: which training rows a run sees, in which order, each epoch.

An order is a list per epoch of row ids. Every draw is keyed by (seed, task,
scheme, run, epoch), so run r's order does not change when K changes.

Schemes:
- ``shuffle``: a fresh permutation of all rows per run and epoch (the paper's setting).
- ``fix-batch``: the partition of rows into batches of ``batch_size`` is drawn
  once per task and shared by all runs; each run and epoch permutes only the
  order of those batches (the paper's Table 4 ablation); a short remainder
  batch is always last.
- ``identity``: the rows in file order every epoch (for tests).
"""
from __future__ import annotations

import random

from ..utils import derive_seed

SCHEMES = ("shuffle", "fix-batch", "identity")


def make_order(ids: list[str], *, scheme: str, run: int, epochs: int, seed: int, task: str,
               batch_size: int | None = None) -> list[list[str]]:
    if len(set(ids)) != len(ids):
        raise ValueError(f"task {task}: training row ids are not unique")
    if scheme == "identity":
        return [list(ids) for _ in range(epochs)]
    if scheme == "shuffle":
        out = []
        for epoch in range(1, epochs + 1):
            perm = list(ids)
            random.Random(derive_seed(seed, task, scheme, run, epoch)).shuffle(perm)
            out.append(perm)
        return out
    if scheme == "fix-batch":
        if not batch_size or batch_size < 1:
            raise ValueError("fix-batch order needs a positive batch_size")
        fixed = list(ids)
        random.Random(derive_seed(seed, task, scheme, "partition")).shuffle(fixed)
        full = len(fixed) - len(fixed) % batch_size
        batches = [fixed[i:i + batch_size] for i in range(0, full, batch_size)]
        out = []
        for epoch in range(1, epochs + 1):
            perm = list(batches)
            random.Random(derive_seed(seed, task, scheme, run, epoch)).shuffle(perm)
            # the short remainder batch stays last, so cutting the order every
            # batch_size rows gives back exactly the fixed batches
            out.append([i for b in perm for i in b] + fixed[full:])
        return out
    raise ValueError(f"unknown order scheme {scheme!r}; known: {', '.join(SCHEMES)}")
