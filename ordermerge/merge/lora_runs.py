"""Exact merges of LoRA runs: every method of the registry on the runs' weight updates.

A LoRA run (ordermerge/lora.py) changes each targeted linear layer W0 (out x in) of the
base by ΔW_k = B_k A_k · alpha / r, a dense matrix. A merge of K LoRA runs is the merge of
the K dense models W0 + ΔW_k. Every method of the registry commutes with adding the same
W0 to every input and to the base (averages, element-wise selection, and the task-vector
methods, whose task vectors W_k − W0 are the ΔW_k themselves), so the engine merges the
ΔW_k against a zero base, and W0 is added to the merged update as it is written:

    merged W = W0 + merge(ΔW_1, ..., ΔW_K)   (float32, then the base's dtype)

Layers no run targets are the base's, copied. The updates are materialised one tensor at a
time per run (`DeltaCheckpoint`), in float32 from a float64 product (each product of two
float32 factors is exact there), whole tensor by whole tensor, so the bytes do not depend
on the engine's chunking; no run's full model is ever held.

PEFT's ``add_weighted_adapter(..., combination_type="linear")`` is not this merge: it
averages the A's and the B's separately (weights folded in as square roots), and the
product of averages carries cross terms B_i A_j (PEFT #3004). docs/merge.md ("LoRA runs")
has a worked case.

Optionally (``adapter_rank``), the merged update is also written as a PEFT adapter of rank
r′ by truncated SVD, with each layer's relative reconstruction error in ``merge.json``.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import tempfile
from pathlib import Path

import torch

from ..lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from .st_io import DEFAULT_SHARD, DTYPES, TORCH_TO_ST, Checkpoint, CheckpointError, \
    MergeError, ShardedWriter, TensorInfo, copy_model_files, read_header

# PEFT's saved key of a LoRA factor (no adapter name in the file): the module, A or B
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")
ADAPTER_DIR = "adapter"  # where the optional SVD adapter of a merge is written


def is_adapter_dir(path) -> bool:
    """A LoRA run's checkpoint: PEFT's adapter files, no model weights."""
    p = Path(path)
    return (p / ADAPTER_CONFIG).is_file() and not (p / "config.json").is_file()


@contextlib.contextmanager
def folded(path):
    """The checkpoint directory `path` as a full model: itself, or for a LoRA run, its
    update folded into the base (W0 + ΔW, float32, then the base's dtype: the merge of one
    run, the arithmetic of every LoRA merge) in a temporary directory, removed on exit.
    Every loader of a LoRA run's weights (evaluation with either backend, scoring, Fisher)
    reads this model."""
    if not is_adapter_dir(path):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="ordermerge-lora-") as tmp:
        fold_into(Path(tmp), path)
        yield Path(tmp)


def fold_into(out_dir: Path, path, base=None) -> None:
    """The LoRA run `path` as a full model in the existing empty directory `out_dir`: the
    base's tensors, W0 + ΔW on the layers it adapts (ComposingWriter, as a merge writes its
    merged update: the bytes of the merge of this one run), the base's config and the run's
    tokenizer files. Not the merge engine: evaluation and scoring do not depend on it."""
    runs = LoraRuns([path], base)
    run = runs.runs[0]
    writer = ComposingWriter(out_dir, runs.base, run.tensors, None, DEFAULT_SHARD)
    step = 1 << 22
    try:
        runs.base.open()
        for name in sorted(run.tensors):
            d = run.delta(name)
            for start in range(0, d.numel(), step):
                writer.write(name, d[start:start + step])
        writer.close()
    finally:
        runs.base.close()
        run.close()
    # the run's own tokenizer files, the base's config (an adapter directory has none)
    copy_model_files(out_dir, [Path(path), runs.base_path])


def weight_files(path) -> list[Path]:
    """A checkpoint's weight files: the adapter's for a LoRA run, else its safetensors."""
    if is_adapter_dir(path):
        return [Path(path) / ADAPTER_WEIGHTS]
    return Checkpoint(path).files()


def read_adapter_config(path) -> dict:
    """adapter_config.json of the adapter directory `path`, checked for what the exact
    update needs: plain LoRA (no DoRA, no rsLoRA, no per-module rank or alpha), weights not
    stored transposed."""
    f = Path(path) / ADAPTER_CONFIG
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise MergeError(f"{f}: not readable as JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        raise MergeError(f"{f}: peft_type is {cfg.get('peft_type') if isinstance(cfg, dict) else cfg!r}, "
                         "not LORA: only LoRA adapters are merged")
    for key, ok in (("use_dora", False), ("use_rslora", False), ("fan_in_fan_out", False)):
        if bool(cfg.get(key, False)) != ok:
            raise MergeError(f"{f}: {key} is {cfg.get(key)!r}: the merge reads plain LoRA "
                             "(ΔW = B A · alpha / r) only")
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            raise MergeError(f"{f}: {key} is set: per-module ranks or alphas are not read")
    for key in ("r", "lora_alpha"):
        if not isinstance(cfg.get(key), (int, float)) or isinstance(cfg.get(key), bool) or cfg[key] <= 0:
            raise MergeError(f"{f}: {key} is {cfg.get(key)!r}, not a positive number")
    return cfg


def recorded_base(path) -> Path:
    """The base model an adapter was trained on, as its adapter_config.json names it."""
    cfg = read_adapter_config(path)
    base = cfg.get("base_model_name_or_path")
    if not isinstance(base, str) or not Path(base, "config.json").is_file():
        raise MergeError(f"{Path(path) / ADAPTER_CONFIG}: base_model_name_or_path {base!r} is "
                         "not a checkpoint directory here: give the base (--base)")
    return Path(base)


class DeltaCheckpoint:
    """One LoRA run as the engine reads a checkpoint: its targeted tensors' ΔW in float32,
    under the base's tensor names, made one whole tensor at a time when first read (views
    and addresses stay valid until the next tensor is read; the engine reads tensors in
    order, each from one thread)."""

    def __init__(self, path, base: Checkpoint):
        self.path = Path(path)
        cfg = read_adapter_config(self.path)
        self.scale = float(cfg["lora_alpha"]) / float(cfg["r"])
        self.file = self.path / ADAPTER_WEIGHTS
        try:
            infos, _ = read_header(self.file)
        except (OSError, CheckpointError) as e:
            raise MergeError(f"{self.file}: {e}") from None
        factors: dict[str, dict[str, TensorInfo]] = {}
        for key, info in infos.items():
            m = _KEY.match(key)
            if m is None:
                raise MergeError(f"{self.file}: tensor {key!r} is not a LoRA factor "
                                 "(modules_to_save, biases and embeddings are not merged)")
            factors.setdefault(m["module"], {})[m["factor"]] = info
        self.factors: dict[str, tuple[TensorInfo, TensorInfo]] = {}
        self.tensors: dict[str, TensorInfo] = {}
        for module, f in sorted(factors.items()):
            name = f"{module}.weight"
            if set(f) != {"A", "B"}:
                raise MergeError(f"{self.file}: module {module!r} has lora_{''.join(f)} only")
            a, b = f["A"], f["B"]
            w = base.tensors.get(name)
            if w is None:
                raise MergeError(f"{self.file}: module {module!r} has no weight {name!r} in the "
                                 f"base {base.path}")
            if (len(a.shape), len(b.shape)) != (2, 2) or a.shape[0] != b.shape[1] or \
                    (b.shape[0], a.shape[1]) != tuple(w.shape) or not (a.is_float and b.is_float):
                raise MergeError(f"{self.file}: module {module!r}: lora_A {list(a.shape)} and "
                                 f"lora_B {list(b.shape)} do not make the base's {name} "
                                 f"{list(w.shape)}")
            self.factors[name] = (a, b)
            # offset: A's, unique per tensor (the engine finds shared tensors by location)
            self.tensors[name] = TensorInfo(name, "F32", tuple(w.shape), self.file, a.offset,
                                            math.prod(w.shape) * 4)
        if not self.tensors:
            raise MergeError(f"{self.file}: no LoRA factors")
        self.ranks = sorted({a.shape[0] for a, _ in self.factors.values()})
        self._loaded: dict[str, torch.Tensor] | None = None
        self._current: tuple[str, torch.Tensor] | None = None

    def files(self) -> list[Path]:
        return [self.file]

    def nbytes(self) -> int:
        return self.file.stat().st_size

    def open(self) -> None:
        if self._loaded is None:
            from safetensors.torch import load_file
            self._loaded = load_file(self.file)

    def close(self) -> None:
        self._loaded, self._current = None, None

    def delta(self, name: str) -> torch.Tensor:
        """ΔW of tensor `name`, flat, float32: B A · alpha / r, the product taken in float64."""
        if self._current is None or self._current[0] != name:
            self.open()
            module = name[: -len(".weight")]
            a = self._loaded[f"base_model.model.{module}.lora_A.weight"]
            b = self._loaded[f"base_model.model.{module}.lora_B.weight"]
            d = (b.double() @ a.double()).mul_(self.scale).float().reshape(-1)
            self._current = (name, d)
        return self._current[1]

    def view(self, name: str, start: int, n: int) -> torch.Tensor:
        return self.delta(name)[start:start + n]

    def address(self, name: str, start: int, n: int) -> int:
        if not 0 <= start <= start + n <= self.tensors[name].numel:
            raise IndexError(f"tensor {name!r}: elements {start}..{start + n} outside")
        return self.delta(name).data_ptr() + 4 * start


class ZeroBase:
    """The base of the ΔW merge: zeros of every merged tensor's shape (task vectors are then
    the ΔW_k themselves)."""

    def __init__(self, like: DeltaCheckpoint, base: Checkpoint):
        self.path, self.tensors = base.path, dict(like.tensors)
        self._zeros = torch.zeros(max(t.numel for t in self.tensors.values()))

    def files(self) -> list[Path]:
        return []

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def view(self, name: str, start: int, n: int) -> torch.Tensor:
        return self._zeros[:n]

    def address(self, name: str, start: int, n: int) -> int:
        return self._zeros.data_ptr()


class LoraRuns:
    """K LoRA runs of one base, opened for a merge: `runs` (DeltaCheckpoint), `base` (the
    base Checkpoint), `zero` (the ΔW merge's base)."""

    def __init__(self, inputs: list, base=None):
        kinds = [is_adapter_dir(p) for p in inputs]
        if not all(kinds):
            i = kinds.index(False)
            raise MergeError(f"sub-model {inputs[i]} is a full checkpoint and {inputs[kinds.index(True)]} "
                             "a LoRA adapter: merge runs of one kind")
        recorded = [recorded_base(p) if base is None else None for p in inputs]
        if base is None:
            different = [r for r in recorded if r.resolve() != recorded[0].resolve()]
            if different:
                raise MergeError(f"the adapters name different bases ({recorded[0]} and "
                                 f"{different[0]}): give the base (--base)")
            base = recorded[0]
        self.base_path = Path(base)
        try:
            self.base = Checkpoint(base)
        except CheckpointError as e:
            raise MergeError(f"base: {e}") from None
        self.runs = [DeltaCheckpoint(p, self.base) for p in inputs]
        ref = self.runs[0]
        for r in self.runs[1:]:
            extra = sorted(set(r.tensors) ^ set(ref.tensors))
            if extra:
                holder, lacking = (r, ref) if extra[0] in r.tensors else (ref, r)
                raise MergeError(f"{holder.file} adapts {extra[0]!r}, {lacking.file} does not: "
                                 "the runs must target the same modules")
        self.zero = ZeroBase(ref, self.base)

    def record(self) -> dict:
        return {"base": str(self.base_path), "targets": len(self.runs[0].tensors),
                "scales": [r.scale for r in self.runs], "ranks": [r.ranks for r in self.runs]}


def check_svd_rank(rank, runs: LoraRuns) -> None:
    """The SVD adapter's rank: a positive integer no larger than any merged layer's side."""
    if rank is None:
        return
    small = min(min(t.shape) for t in runs.runs[0].tensors.values())
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= small:
        raise MergeError(f"adapter_rank {rank!r}: expected an integer from 1 to {small} (the "
                         "smallest side of a merged layer)")


class ComposingWriter:
    """The engine's writer for a ΔW merge: writes the base's tensors, in order, into
    `out_dir` in `dtype` (None: each tensor's own), adding each merged ΔW chunk to the
    base's elements (in float32) as it comes; the layers no run targets are the base's.
    With `svd_rank`, each merged ΔW is also kept whole until its last chunk and factored
    (svd_adapter)."""

    def __init__(self, out_dir: Path, base: Checkpoint, targets: dict, dtype: torch.dtype | None,
                 max_shard_bytes: int, svd_rank: int | None = None):
        self.base, self.targets, self.dtype = base, targets, dtype
        self.order = sorted(base.tensors)
        self.out_dtype = {n: (TORCH_TO_ST[dtype] if dtype is not None and i.is_float else i.dtype)
                          for n, i in base.tensors.items()}
        self.writer = ShardedWriter(Path(out_dir), [(n, self.out_dtype[n], base.tensors[n].shape)
                                                    for n in self.order], max_shard_bytes)
        self.names = self.writer.names
        self._next = 0  # index into order of the next tensor to write
        self._at = 0  # elements of the current targeted tensor written
        self.svd_rank, self.factors, self._whole = svd_rank, {}, None

    def _copy_until(self, name: str | None) -> None:
        while self._next < len(self.order) and self.order[self._next] != name:
            n = self.order[self._next]
            if n in self.targets:
                raise RuntimeError(f"ΔW of {n!r} was not written")
            info = self.base.tensors[n]
            step = 1 << 22
            for start in range(0, info.numel, step) or [0]:
                v = self.base.view(n, start, min(step, info.numel - start))
                self.writer.write(n, v.to(DTYPES[self.out_dtype[n]][0]) if info.is_float else v)
            self._next += 1

    def write(self, name: str, chunk: torch.Tensor) -> None:
        if self._at == 0:
            self._copy_until(name)
        info = self.base.tensors[name]
        n = chunk.numel()
        # float32 (a bfloat16 base is promoted exactly); a new tensor: the base is read-only
        w = chunk.float() + self.base.view(name, self._at, n).float()
        self.writer.write(name, w.to(DTYPES[self.out_dtype[name]][0]))
        if self.svd_rank is not None:
            if self._at == 0:
                self._whole = torch.empty(info.numel, dtype=torch.float32)
            self._whole[self._at:self._at + n] = chunk
        self._at += n
        if self._at == info.numel:
            if self.svd_rank is not None:
                self.factors[name] = svd_factors(self._whole.view(info.shape), self.svd_rank)
                self._whole = None
            self._at, self._next = 0, self._next + 1

    def close(self) -> None:
        self._copy_until(None)
        self.writer.close()


def svd_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(B, A, relative error) of the best rank-`rank` approximation of `delta` (out x in) in
    the Frobenius norm (Eckart-Young: the truncated SVD, in float64): B = U_r S_r, A = V_r^T,
    error = ||delta - B A||_F / ||delta||_F (0 for a zero delta)."""
    d = delta.double()
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    r = min(rank, s.numel())
    b, a = (u[:, :r] * s[:r]).float(), vh[:r].float()
    norm = float(torch.linalg.matrix_norm(d))
    err = float(torch.linalg.matrix_norm(d - b.double() @ a.double())) / norm if norm > 0 else 0.0
    return b.contiguous(), a.contiguous(), err


def write_svd_adapter(out_dir: Path, runs: LoraRuns, factors: dict, rank: int) -> dict:
    """The merged update as a PEFT adapter of rank `rank` (alpha = rank: scale 1) in
    out_dir/adapter, from the first run's adapter config; returns the errors' record."""
    from safetensors.torch import save_file
    d = Path(out_dir) / ADAPTER_DIR
    d.mkdir()
    cfg = read_adapter_config(runs.runs[0].path)
    cfg.update(r=rank, lora_alpha=rank, base_model_name_or_path=str(runs.base_path))
    (d / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tensors = {}
    for name, (b, a, _) in factors.items():
        module = name[: -len(".weight")]
        tensors[f"base_model.model.{module}.lora_A.weight"] = a
        tensors[f"base_model.model.{module}.lora_B.weight"] = b
    save_file(tensors, str(d / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    errs = {n: e for n, (_, _, e) in sorted(factors.items())}
    return {"rank": rank, "dir": ADAPTER_DIR, "relative_error": errs,
            "max_relative_error": max(errs.values(), default=0.0)}
