"""The merge engine: streams K checkpoints through a method, chunk by chunk, into a model.

The output layout (tensor names, dtypes, shapes, shards) is known from the
input headers, so each chunk is written as soon as it is merged. Inputs are
memory-mapped (their pages are page cache, not this process's memory); the
chunk size comes from the memory budget (stacks of K input chunks, outputs in
flight, draws and float32 accumulators), capped to stay in cache. A tensor
larger than a chunk is cut into consecutive element ranges, which for a
row-major tensor are cuts along its first dimension. Draws are keyed by
element index (rng.py), so the bytes do not depend on the chunk size, the
thread count or the device.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from . import average, fused, resample, rng, select
from .st_io import DTYPES, TORCH_TO_ST, Checkpoint, CheckpointError, ShardedWriter

METHODS = ("average", "select", "resample")
COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json",
          "merges.txt")
DEFAULT_BUDGET = 1 << 30
DEFAULT_SHARD = 5 * 10**9
# elements per chunk at most. The torch path's temporaries are per chunk: small enough to
# stay in cache (on 2 cores 2**16 to 2**18 were fastest, 2**25 about 1.8x slower); the
# fused kernels block inside a chunk, so their chunks are larger (fewer calls)
CHUNK_CAP = 1 << 17
FUSED_CHUNK_CAP = 1 << 22


class MergeError(ValueError):
    pass


def check_probs(values: list[float] | None, k: int, what: str) -> list[float]:
    """Uniform when None; else length K, non-negative, summing to 1 within 1e-6."""
    if values is None:
        return [1.0 / k] * k
    values = [float(v) for v in values]
    if len(values) != k:
        raise MergeError(f"{what}: {len(values)} values for {k} sub-models")
    if any(v < 0 or math.isnan(v) for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise MergeError(f"{what}: must be non-negative and sum to 1 (within 1e-6), got {values}")
    return values


def bytes_per_element(k: int, itemsize: int, method: str, fused_path: bool = False) -> int:
    """Anonymous memory one chunk element costs. Fused: two outputs in flight (the kernels'
    per-block temporaries are fixed). Torch: also two stack slots of K inputs and the
    temporaries. The inputs themselves are mapped, not copied."""
    if fused_path:
        return 2 * itemsize
    temps = 3 * 4 if method == "average" else 5 * 8  # fp32 acc, term, input / index, draws...
    return 2 * k * itemsize + 2 * itemsize + temps


def _open_all(inputs, base, method) -> tuple[list[Checkpoint], Checkpoint | None]:
    try:
        subs = [Checkpoint(p) for p in inputs]
        base_ckpt = Checkpoint(base) if method == "resample" else None
    except CheckpointError as e:
        raise MergeError(str(e)) from None
    ref = subs[0]
    for s in subs[1:]:
        extra = sorted(set(s.tensors) ^ set(ref.tensors))
        if extra:
            holder, lacking = (s, ref) if extra[0] in s.tensors else (ref, s)
            raise MergeError(f"tensor {extra[0]!r} is in {holder.tensors[extra[0]].file} but "
                             f"missing from {lacking.path} ({len(extra)} tensors differ)")
    for name, t in ref.tensors.items():
        for s in subs[1:] + ([base_ckpt] if base_ckpt else []):
            if name not in s.tensors:
                raise MergeError(f"tensor {name!r} is missing from the base {s.path}")
            u = s.tensors[name]
            if (u.shape, u.dtype) != (t.shape, t.dtype):
                raise MergeError(f"tensor {name!r}: {u.file} has {list(u.shape)} {u.dtype}, "
                                 f"{t.file} has {list(t.shape)} {t.dtype}")
    return subs, base_ckpt


EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


def shared_keys(ckpt: Checkpoint) -> dict[str, str]:
    """Tied or shared tensors: name -> the name whose draws it takes, so that both get the
    same merge. Two names stored at the same bytes of one file share; so do
    `lm_head.weight` and the input embeddings when config.json sets tie_word_embeddings
    (a tied model that was saved with both copies)."""
    aliases, first_at = {}, {}
    for name in sorted(ckpt.tensors):
        t = ckpt.tensors[name]
        where = (t.file, t.offset, t.nbytes, t.dtype, t.shape)
        if t.nbytes and where in first_at:
            aliases[name] = first_at[where]
        else:
            first_at.setdefault(where, name)
    try:
        tied = json.loads((ckpt.path / "config.json").read_text()).get("tie_word_embeddings")
    except (OSError, ValueError, AttributeError):
        tied = None
    head = ckpt.tensors.get("lm_head.weight")
    if tied is True and head is not None and "lm_head.weight" not in aliases:
        emb = [n for n, t in ckpt.tensors.items() if n.endswith(EMBEDDING_SUFFIXES)
               and (t.shape, t.dtype) == (head.shape, head.dtype)]
        if len(emb) == 1:
            aliases["lm_head.weight"] = aliases.get(emb[0], emb[0])
    return aliases


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo in bytes (0 where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _peak_memory() -> dict:
    """Peak RSS and current file-backed RSS from /proc (Linux); peak anon = the difference."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(val.split()[0]) / 1024
    except OSError:
        return {}
    if {"VmHWM", "RssFile"} <= set(out):
        out["peak_anon_mb_estimate"] = out["VmHWM"] - out["RssFile"] - out.get("RssShmem", 0.0)
    return out


def merge_into(out_dir: str | Path, method: str, inputs: list[str | Path], *,
               base: str | Path | None = None, weights: list[float] | None = None, seed: int = 0,
               rounds: int = 0, dtype: str | None = None, device: str = "cpu",
               memory_budget: int = DEFAULT_BUDGET, max_shard_bytes: int = DEFAULT_SHARD,
               chunk_elements: int | None = None) -> dict:
    """Merge `inputs` into the existing empty directory `out_dir`; returns the recipe.

    `weights` are the average's weights or the selection probabilities
    (uniform by default). `chunk_elements` overrides the chunk size the
    budget gives (for tests of chunk invariance). The bytes depend neither on it nor on
    torch's thread count.
    """
    t0 = time.perf_counter()
    k = len(inputs)
    if method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; known: {', '.join(METHODS)}")
    if k < 1:
        raise MergeError("no sub-models to merge")
    if method != "average" and k < 2:
        raise MergeError(f"{method} needs at least 2 sub-models, got {k}")
    if method == "resample" and base is None:
        raise MergeError("resample needs --base: task vectors are relative to the base model")
    if rounds < 0:
        raise MergeError(f"rounds must be >= 0, got {rounds}")
    w = check_probs(weights, k, "weights" if method == "average" else "probabilities")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MergeError(f"device {device!r} asked for, but CUDA is not available")
    dev = torch.device(device)
    out_torch_dtype = None
    if dtype is not None:
        try:
            out_torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16,
                               "float32": torch.float32}[dtype]
        except KeyError:
            raise MergeError(f"dtype {dtype!r}: expected bfloat16, float16 or float32") from None

    subs, base_ckpt = _open_all(inputs, base, method)
    checkpoints = subs + ([base_ckpt] if base_ckpt else [])
    names = sorted(subs[0].tensors)
    infos = [subs[0].tensors[n] for n in names]

    def out_dtype_of(info):
        return TORCH_TO_ST[out_torch_dtype] if (out_torch_dtype and info.is_float) else info.dtype

    out_dir = Path(out_dir)
    writer = ShardedWriter(out_dir, [(i.name, out_dtype_of(i), i.shape) for i in infos],
                           max_shard_bytes)
    pin = dev.type == "cuda"

    def fusable(info) -> bool:
        """The fused CPU kernel applies (numba present, dtype supported, no cast between)."""
        if pin or not info.is_float:
            return False
        if method == "average":
            return (fused.average_available(info.torch_dtype)
                    and out_torch_dtype in (None, info.torch_dtype))
        return fused.available(info.torch_dtype)

    fused_path = all(fusable(i) for i in infos if i.is_float)
    # one worker thread merges chunk j + 1 while this thread writes chunk j (numba and torch
    # release the GIL); their own threads parallelise each chunk. More workers measured no
    # faster on 2 cores.
    window = 2
    max_item = max((i.itemsize for i in infos), default=1)
    if chunk_elements is None:
        per = bytes_per_element(k, max(max_item, 4), method, fused_path)
        cap = FUSED_CHUNK_CAP if fused_path else CHUNK_CAP
        chunk_elements = min(cap, max(1, memory_budget // per))
    largest = max((i.numel for i in infos), default=1)
    chunk_elements = max(1, min(chunk_elements, largest))
    buffers: dict[tuple[torch.dtype, int], torch.Tensor] = {}
    # pre-fault the mappings when the inputs fit comfortably in memory (about 20% faster);
    # larger inputs are faulted in as they are read
    populate = sum(c.nbytes() for c in checkpoints) < _available_memory() // 4
    for c in checkpoints:
        c.open(populate=populate)

    # every tensor gets at least one item, so tensors without elements are written too
    items = [(info, start, min(chunk_elements, info.numel - start))
             for info in infos for start in (range(0, info.numel, chunk_elements) or [0])]
    sampler = rng.Sampler(w, dev) if method != "average" else None
    # a shared tensor is merged with the draws of the tensor it shares (the same result);
    # merged again rather than kept, so memory stays within the budget
    aliases = shared_keys(subs[0])
    stats = {"shared": aliases, "tensors": sum(i.is_float for i in infos),
             "elements": sum(i.numel for i in infos if i.is_float), "chunks": len(items),
             "copied_non_float": sum(not i.is_float for i in infos),
             "equal_to_base": 0 if method == "resample" else None}

    def merge_one(info, start: int, n: int, slot: int) -> tuple[torch.Tensor, int]:
        if not info.is_float:
            views = [s.view(info.name, start, n) for s in subs]
            differs = [subs[i].path for i in range(1, k) if not torch.equal(views[i], views[0])]
            if differs:
                raise MergeError(f"non-float tensor {info.name!r} differs between {subs[0].path} "
                                 f"and {differs[0]}: it cannot be merged")
            return views[0].clone(), 0
        at_base = 0
        key = aliases.get(info.name, info.name)  # the draws' tensor name
        if fusable(info):
            # in place from the mapped inputs: no copy, any K
            addrs = [s.address(info.name, start, n) for s in subs]
            if method == "average":
                out = fused.average_at(addrs, n, info.torch_dtype, w)
            else:
                b = base_ckpt.address(info.name, start, n) if method == "resample" else None
                out, at_base = fused.merge_at(addrs, b, n, info.torch_dtype, sampler, rounds=rounds,
                                              seed=seed, name=key, start=start)
        elif method == "average" and not pin:
            # from the mapped inputs: no copy
            out = average.merge_chunk([s.view(info.name, start, n) for s in subs], w,
                                      out_torch_dtype)
        else:
            # select and resample gather across sub-models: stack the chunk (pinned for the GPU)
            stack = buffers[(info.torch_dtype, slot)][:k * n].view(k, n)
            for i, s in enumerate(subs):
                stack[i].copy_(s.view(info.name, start, n))
            stack = stack.to(dev, non_blocking=True)
            if method == "average":
                out = average.merge_chunk(stack, w, out_torch_dtype)
            elif method == "select":
                out = select.merge_chunk(stack, sampler, seed=seed, name=key, start=start)
            else:
                b = base_ckpt.view(info.name, start, n).to(dev, non_blocking=True)
                out, at_base = resample.merge_chunk(stack, b, sampler, rounds=rounds, seed=seed,
                                                    name=key, start=start)
        if out_torch_dtype is not None:
            out = out.to(out_torch_dtype)
        return out.cpu(), at_base

    for dt in {i.torch_dtype for i in infos if i.is_float and not fusable(i)}:
        for slot in range(window if (method != "average" or pin) else 0):
            buffers[(dt, slot)] = torch.empty(k * chunk_elements, dtype=dt, pin_memory=pin)

    def task(j: int) -> tuple[torch.Tensor, int]:
        return merge_one(*items[j], j % window)

    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            # at most `window` chunks in flight; chunk j's buffer slot is reused by chunk
            # j + window, submitted only after chunk j is written
            pending = deque(pool.submit(task, j) for j in range(min(window, len(items))))
            for j, (info, _, _) in enumerate(items):
                out, at_base = pending.popleft().result()
                writer.write(info.name, out)
                if method == "resample":
                    stats["equal_to_base"] += at_base
                if j + window < len(items):
                    pending.append(pool.submit(task, j + window))
        writer.close()
    finally:
        for c in checkpoints:
            c.close()

    source = Path(base) if base is not None else Path(inputs[0])
    for f in COPIED:
        if (source / f).is_file():
            shutil.copy2(source / f, out_dir / f)
    if out_torch_dtype is not None and (out_dir / "config.json").is_file():
        cfg = json.loads((out_dir / "config.json").read_text())
        cfg["dtype"] = dtype
        (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return {
        "method": method,
        "sub_models": [str(p) for p in inputs],
        "base": str(base) if base is not None else None,
        "weights" if method == "average" else "probabilities": w,
        "seed": seed if method != "average" else None,
        "rounds": rounds if method == "resample" else None,
        "dtype": dtype,
        "device": str(dev),
        "memory_budget": memory_budget,
        "chunk_elements": chunk_elements,
        "shards": writer.names,
        "stats": stats,
        "wall_s": time.perf_counter() - t0,
        "memory_mb": _peak_memory(),
    }


def model_card(recipe: dict) -> str:
    k = len(recipe["sub_models"])
    lines = [f"# Merged model: {recipe['method']} of {k} sub-models", "",
             "Made by ordermerge (Ju et al. 2024, selective parameter merging).", "",
             f"- method: `{recipe['method']}`"]
    if recipe["method"] == "average":
        lines.append(f"- weights: {recipe['weights']}")
    else:
        lines.append(f"- probabilities: {recipe['probabilities']}, seed {recipe['seed']}")
    if recipe["method"] == "resample":
        lines.append(f"- resample rounds: {recipe['rounds']}, base: `{recipe['base']}`")
    lines += ["- sub-models:"] + [f"  - `{p}`" for p in recipe["sub_models"]]
    lines += ["", "The full recipe, input hashes and versions are in `merge.json`.", ""]
    return "\n".join(lines)


def merge(method: str, inputs: list[str | Path], out_dir: str | Path, *, overwrite: bool = False,
          before_rename=None, **kw) -> dict:
    """Merge into `out_dir` atomically: built in a temporary directory beside it and renamed
    on success, so on any failure nothing is at `out_dir`. Writes ``merge.json`` (recipe and
    provenance: input sha256, code and package versions, wall time, memory) and a model card.
    `before_rename(tmp_dir, recipe)` may add files before the rename. See merge_into for
    the options."""
    from ..provenance import code_version, hash_inputs, package_versions
    from ..utils import atomic_dir

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise MergeError(f"{out_dir} already exists (pass overwrite=True / --overwrite)")
    with atomic_dir(out_dir) as tmp:
        recipe = merge_into(tmp, method, inputs, **kw)
        sources = [*inputs, *([kw["base"]] if method == "resample" else [])]
        recipe["provenance"] = {"inputs_sha256": hash_inputs(sources), "code": code_version(),
                                "packages": package_versions()}
        (tmp / "merge.json").write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(model_card(recipe))
        if before_rename is not None:
            before_rename(tmp, recipe)
    return recipe
