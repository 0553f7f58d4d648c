"""The merge engine: reads K checkpoints, applies a method tensor by tensor, writes a model.

This version holds one tensor of each of the K inputs in memory at a time
(tensors are read lazily with ``safe_open``) and writes one
``model.safetensors``. The output directory is a complete Hugging Face model:
config, generation config and tokenizer files copied from the first input,
``merge.json`` with the recipe.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import average, resample, select

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "chat_template.jinja", "tokenizer.model")


class MergeError(ValueError):
    pass


class Checkpoint:
    """Lazy access to the tensors of one checkpoint directory (single file or sharded)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if (self.path / INDEX).is_file():
            index = json.loads((self.path / INDEX).read_text())["weight_map"]
            self.files = {name: self.path / f for name, f in index.items()}
        elif (self.path / WEIGHTS).is_file():
            self.files = None
        else:
            raise MergeError(f"{self.path}: no {WEIGHTS} or {INDEX}")
        self._handles: dict[Path, object] = {}
        if self.files is None:
            self.files = {name: self.path / WEIGHTS for name in self._open(self.path / WEIGHTS).keys()}

    def _open(self, f: Path):
        if f not in self._handles:
            try:
                self._handles[f] = safe_open(str(f), framework="pt")
            except (SafetensorError, OSError) as e:
                raise MergeError(f"{f}: not a readable safetensors file: {e}") from None
        return self._handles[f]

    def names(self) -> list[str]:
        return sorted(self.files)

    def get(self, name: str) -> torch.Tensor:
        try:
            return self._open(self.files[name]).get_tensor(name)
        except SafetensorError as e:
            raise MergeError(f"{self.files[name]}: tensor {name!r} cannot be read: {e}") from None


def _check_probs(values: list[float] | None, k: int, what: str) -> list[float]:
    if values is None:
        return [1.0 / k] * k
    if len(values) != k:
        raise MergeError(f"{what}: {len(values)} values for {k} sub-models")
    if any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise MergeError(f"{what}: must be non-negative and sum to 1, got {values}")
    return list(values)


def merge(method: str, inputs: list[str | Path], out_dir: str | Path, *, base: str | Path | None = None,
          weights: list[float] | None = None, seed: int = 0, rounds: int = 0) -> dict:
    """Merge `inputs` into `out_dir` (which must not exist yet; the caller renames it)."""
    k = len(inputs)
    if k < 1:
        raise MergeError("no sub-models to merge")
    if method in ("select", "resample") and k < 2:
        raise MergeError(f"{method} needs at least 2 sub-models, got {k}")
    if method == "resample" and base is None:
        raise MergeError("resample needs the base model (task vectors are relative to it)")
    if method not in ("average", "select", "resample"):
        raise MergeError(f"unknown merge method {method!r}")
    w = _check_probs(weights, k, "weights" if method == "average" else "probabilities")
    subs = [Checkpoint(p) for p in inputs]
    base_ckpt = Checkpoint(base) if method == "resample" else None
    names = subs[0].names()
    for s in subs[1:]:
        if s.names() != names:
            diff = sorted(set(names) ^ set(s.names()))
            raise MergeError(f"tensor {diff[0]!r} is in {subs[0].path} or {s.path} but not both "
                             f"({len(diff)} differ)")
    merged: dict[str, torch.Tensor] = {}
    stats = {"tensors": 0, "elements": 0, "equal_to_base": 0}
    for name in names:
        stack = [s.get(name) for s in subs]
        for s, t in zip(subs, stack):
            if t.shape != stack[0].shape or t.dtype != stack[0].dtype:
                raise MergeError(f"tensor {name!r}: {s.path} has {tuple(t.shape)} {t.dtype}, "
                                 f"{subs[0].path} has {tuple(stack[0].shape)} {stack[0].dtype}")
        if not stack[0].is_floating_point():
            if any(not torch.equal(t, stack[0]) for t in stack[1:]):
                raise MergeError(f"non-float tensor {name!r} differs between sub-models")
            merged[name] = stack[0]
            continue
        sub_models = torch.stack(stack)
        if method == "average":
            out = average.merge_chunk(sub_models, w)
        elif method == "select":
            out = select.merge_chunk(sub_models, w, seed=seed, name=name, offset=0)
        else:
            if name not in base_ckpt.files:
                raise MergeError(f"tensor {name!r} is missing from the base {base_ckpt.path}")
            b = base_ckpt.get(name)
            if b.shape != stack[0].shape or b.dtype != stack[0].dtype:
                raise MergeError(f"tensor {name!r}: base {base_ckpt.path} has {tuple(b.shape)} "
                                 f"{b.dtype}, sub-models have {tuple(stack[0].shape)} {stack[0].dtype}")
            out = resample.merge_chunk(sub_models, b, w, rounds=rounds, seed=seed, name=name, offset=0)
            stats["equal_to_base"] += int((out == b).sum())
        merged[name] = out.contiguous()
        stats["tensors"] += 1
        stats["elements"] += out.numel()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(merged, str(out_dir / WEIGHTS), metadata={"format": "pt"})
    for f in COPIED:
        if (Path(inputs[0]) / f).is_file():
            shutil.copy2(Path(inputs[0]) / f, out_dir / f)
    recipe = {
        "method": method,
        "sub_models": [str(p) for p in inputs],
        "base": str(base) if base is not None else None,
        "weights" if method == "average" else "probabilities": w,
        "seed": seed if method != "average" else None,
        "rounds": rounds if method == "resample" else None,
        "stats": stats,
    }
    (out_dir / "merge.json").write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
    return recipe
