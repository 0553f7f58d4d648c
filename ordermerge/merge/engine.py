"""The merge engine: streams K checkpoints through a method, chunk by chunk, into a model.

How it works (memory-mapped inputs, chunks cut from the memory budget, each chunk written
as soon as it is merged, draws keyed by element index so that the bytes do not depend on
chunking, threads or device) is described once, in docs/merge.md ("Merging your own
checkpoints"); `merge` is the entry point.
"""
from __future__ import annotations

import json
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models import DTYPES as TORCH_DTYPES
from . import rng
from .methods import Chunk, Method, get
from .lora_runs import ComposingWriter, DeltaCheckpoint, LoraRuns, check_svd_rank, is_adapter_dir, write_svd_adapter
from .rundata import run_data
from .st_io import (DEFAULT_SHARD, EMBEDDING_SUFFIXES, TORCH_TO_ST, Checkpoint,
                    CheckpointError, MergeError, ShardedWriter, copy_model_files)

DEFAULT_BUDGET = 1 << 30
# elements per chunk at most. The torch path's temporaries are per chunk: small enough to
# stay in cache (on 2 cores 2**16 to 2**18 were fastest, 2**25 about 1.8x slower); the
# fused kernels block inside a chunk, so their chunks are larger (fewer calls)
CHUNK_CAP = 1 << 17
FUSED_CHUNK_CAP = 1 << 22
# a merge of fewer float elements per sub-model runs the torch path: the fused kernels'
# numba compilation, once per checkout and kernel and dtype (3 to 8 CPU-s each; the default
# run compiled four, 18 CPU-s), costs more than such a merge (tens of milliseconds for the
# tiny suite's 0.75M elements). The two paths give the same bytes (tests/test_engine.py,
# test_taskvec.py, test_model_stock.py); the tests lower it to 0 to reach the kernels.
FUSED_MIN_ELEMENTS = 1 << 22


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
    if get(method).weights == "task":  # K float32 task vectors, masks, keys and draws
        return 2 * k * itemsize + 2 * itemsize + k * (4 + 4 + 8) + 6 * 8
    return 2 * k * itemsize + 2 * itemsize + get(method).temp_bytes


def _opened(p):
    """A checkpoint path opened as one; an object already read as one (a LoRA run's ΔW,
    lora_runs.py) as it is."""
    return Checkpoint(p) if isinstance(p, (str, Path)) else p


def _open_all(inputs, base) -> tuple[list[Checkpoint], Checkpoint | None]:
    try:
        subs = [_opened(p) for p in inputs]
        base_ckpt = _opened(base) if base is not None else None
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


def _peak_memory(anon_at_start: float | None = None) -> dict:
    """Peak RSS and current file-backed RSS from /proc (Linux); peak anon = the difference.
    With `anon_at_start` (RssAnon when the merge began), also the peak's growth over it:
    what the merge itself allocated, whatever the process held before (a job forked from the
    warm worker holds the libraries it preloaded, which a cold merge job never imports)."""
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
        if anon_at_start is not None:
            out["anon_mb_at_start"] = anon_at_start
            out["peak_anon_mb_over_start"] = out["peak_anon_mb_estimate"] - anon_at_start
    return out


def check_weights(values: list[float] | None, k: int, kind: str) -> list[float]:
    """A method's weights, read as its registry entry says (kind): `average` and
    `probabilities` are uniform by default and must sum to 1; `task` (one per task vector)
    default to 1 each and must be finite; `none`: the method weighs the runs itself (the
    recipe records 1/K), weights given are refused."""
    what = "weights" if kind != "probabilities" else "probabilities"
    if kind == "none":
        if values is not None:
            raise MergeError("weights: this method weighs the runs itself; give none")
        return [1.0 / k] * k
    if kind == "task":
        if values is None:
            return [1.0] * k
        values = [float(v) for v in values]
        if len(values) != k:
            raise MergeError(f"{what}: {len(values)} values for {k} sub-models")
        if any(not math.isfinite(v) for v in values):
            raise MergeError(f"{what}: must be finite, got {values}")
        return values
    return check_probs(values, k, what)


@dataclass
class _Plan:
    """Everything a merge run needs, decided before any tensor is read."""
    method: Method
    impl: object
    settings: dict
    weights: list[float]
    subs: list[Checkpoint]
    base: Checkpoint | None
    infos: list
    out_dtype: torch.dtype | None
    dev: torch.device
    writer: ShardedWriter
    chunk_elements: int
    items: list[tuple]
    fused: set[str]  # tensors merged by the method's fused CPU kernel
    aliases: dict[str, str]
    sampler: rng.Sampler | None
    aux: list[Checkpoint] = field(default_factory=list)  # per-sub-model data (Method.data)
    window: int = 2
    allow_nonfinite: bool = False
    buffers: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def _open_aux(m: Method, aux, subs: list[Checkpoint], settings: dict) -> list[Checkpoint]:
    """The per-sub-model data files a method reads beside the sub-models, opened and checked
    by its data kind's reader (rundata.py); greedy soup's validation records are read before
    the merge (greedy_soup.build), not here."""
    data = run_data(m)
    if data is None or data.open is None:
        if aux:
            raise MergeError(f"{m.name} reads no per-sub-model data, but some was given "
                             f"({aux[0]}, ...)")
        return []
    return data.open(m.name, aux, subs, settings)


def _check_aux(plan: "_Plan", info, start: int, n: int) -> None:
    """What each chunk of the method's per-sub-model data must hold (rundata.py)."""
    check = run_data(plan.method).check_chunk
    if check is not None:
        check(plan.aux, info.name, start, n)


def _validate(method: str, inputs, base, weights, settings: dict, dtype, device):
    try:
        m = get(method)
        settings = m.resolve(settings)
    except ValueError as e:
        raise MergeError(str(e)) from None
    k = len(inputs)
    if k < 1:
        raise MergeError("no sub-models to merge")
    seen: dict[Path, str] = {}
    for p in inputs:  # the same checkpoint twice would count twice
        real = Path(p).resolve()
        if real in seen:
            raise MergeError(f"sub-model {str(p)!r} is {seen[real]!r} again: each sub-model "
                             "counts once (give its weight instead)")
        seen[real] = str(p)
    if k < m.min_models:
        raise MergeError(f"{m.name} needs at least {m.min_models} sub-models, got {k}")
    if m.needs_base and base is None:
        raise MergeError(f"{m.name} needs --base: task vectors are relative to the base model")
    w = check_weights(weights, k, m.weights)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MergeError(f"device {device!r} asked for, but CUDA is not available")
    if dtype is not None and dtype not in TORCH_DTYPES:
        raise MergeError(f"dtype {dtype!r}: expected {', '.join(sorted(TORCH_DTYPES))}")
    return m, settings, w, (TORCH_DTYPES[dtype] if dtype else None), torch.device(device)


def _plan(m: Method, settings, w, inputs, base, out_dtype, dev, out_dir, memory_budget,
          max_shard_bytes, chunk_elements, aux=None, writer=None) -> _Plan:
    """`writer`: where the merged tensors go (default a ShardedWriter of them into out_dir;
    a LoRA merge's adds the base, lora_runs.ComposingWriter)."""
    k = len(inputs)
    subs, base_ckpt = _open_all(inputs, base if m.needs_base else None)
    aux_ckpts = _open_aux(m, aux, subs, settings)
    names = sorted(subs[0].tensors)
    infos = [subs[0].tensors[n] for n in names]

    def out_dtype_of(info):
        return TORCH_TO_ST[out_dtype] if (out_dtype and info.is_float) else info.dtype

    writer = writer or ShardedWriter(Path(out_dir), [(i.name, out_dtype_of(i), i.shape)
                                                      for i in infos], max_shard_bytes)
    impl = m.impl()
    can_fuse = getattr(impl, "fused_available", None)
    # a LoRA merge's inputs are ΔW made per tensor in memory: the torch path (the fused
    # kernels' float32 variants would be compiled for it, about 10 CPU-s once per checkout,
    # more than the whole merge of the tiny suite's LoRA runs)
    lora = isinstance(subs[0], DeltaCheckpoint)
    small = sum(i.numel for i in infos if i.is_float) < FUSED_MIN_ELEMENTS
    fused_names = set() if dev.type == "cuda" or can_fuse is None or lora or small else {
        i.name for i in infos if i.is_float and can_fuse(i.torch_dtype, out_dtype, m.name)}
    fused_path = all(i.name in fused_names for i in infos if i.is_float)
    max_item = max((i.itemsize for i in infos), default=1)
    if chunk_elements is None:
        per = bytes_per_element(k, max(max_item, 4), m.name, fused_path)
        cap = FUSED_CHUNK_CAP if fused_path else CHUNK_CAP
        chunk_elements = min(cap, max(1, memory_budget // per))
    largest = max((i.numel for i in infos), default=1)
    chunk_elements = max(1, min(chunk_elements, largest))
    # every tensor gets at least one item, so tensors without elements are written too
    items = [(info, start, min(chunk_elements, info.numel - start))
             for info in infos for start in (range(0, info.numel, chunk_elements) or [0])]
    sampler = None
    if m.random:
        # selection draws with the given probabilities; task-vector methods draw uniformly
        sampler = rng.Sampler(w if m.weights == "probabilities" else [1.0 / k] * k, dev)
    plan = _Plan(m, impl, settings, w, subs, base_ckpt, infos, out_dtype, dev, writer,
                 chunk_elements, items, fused_names, shared_keys(subs[0]), sampler, aux_ckpts)
    stacked = getattr(impl, "STACKED", False) or dev.type == "cuda"
    pin = dev.type == "cuda"
    for dt in {i.torch_dtype for i in infos if i.is_float and i.name not in fused_names}:
        for slot in range(plan.window if stacked else 0):
            plan.buffers[(dt, slot)] = torch.empty(k * chunk_elements, dtype=dt, pin_memory=pin)
    # the fused kernels' outputs, one per chunk in flight, reused (a fresh allocation of a
    # chunk faults in its pages each time: about a tenth of an average's time)
    for dt in {i.torch_dtype for i in infos if i.name in fused_names}:
        for slot in range(plan.window):
            plan.buffers[("out", dt, slot)] = torch.empty(chunk_elements, dtype=dt)
    # a shared tensor is merged with the draws of the tensor it shares (the same result);
    # merged again rather than kept, so memory stays within the budget
    plan.stats = {"shared": plan.aliases, "tensors": sum(i.is_float for i in infos),
                  "elements": sum(i.numel for i in infos if i.is_float), "chunks": len(items),
                  "copied_non_float": sum(not i.is_float for i in infos)}
    return plan


def _tensor_reader(plan: _Plan, info):
    """prepare()'s view of one tensor: (start, the K sub-models' views, the base's view) per
    chunk, read from the mapped inputs (CPU)."""
    def chunks():
        for start in range(0, info.numel, plan.chunk_elements):
            n = min(plan.chunk_elements, info.numel - start)
            yield (start, [s.view(info.name, start, n) for s in plan.subs],
                   plan.base.view(info.name, start, n) if plan.base is not None else None)
    return chunks


def _name_nonfinite(plan: _Plan, info, start: int, n: int, out: torch.Tensor | None = None) -> None:
    """Raise MergeError naming the first NaN or Inf of this chunk: in an input or the base
    (its file, the tensor, the flat index), else in the merged elements `out` (finite inputs
    whose arithmetic overflowed). One min/max reduction per input view, in its own dtype
    (NaN and Inf show in it; no temporary, about 8x faster on bf16 than a float32 sum); the
    index is found only when one is there. The fused kernels count NaN and Inf in their own
    pass and call this only when they saw one; the torch path calls it before merging."""
    if n == 0:
        return
    # before blaming the output, look at the whole tensor: a per-tensor quantity (Model
    # Stock's t, DARE's L1 rescale) carries a NaN elsewhere in it into every chunk (the
    # chunks before this one were clean, so its first NaN is this chunk's, if it has one)
    lo, size = (start, n) if out is None else (0, info.numel)
    for c in plan.subs + ([plan.base] if plan.base is not None else []):
        v = c.view(info.name, lo, size)
        low, high = torch.aminmax(v)
        if not (math.isfinite(low.item()) and math.isfinite(high.item())):
            bad = int((~torch.isfinite(v)).nonzero()[0, 0]) + lo
            raise MergeError(f"tensor {info.name!r} in {c.tensors[info.name].file} holds NaN "
                             f"or Inf (first at flat index {bad}); pass --allow-nonfinite to "
                             "merge it anyway")
    if out is None:
        return
    where = (~torch.isfinite(out)).nonzero()
    if len(where) == 0:
        raise RuntimeError(f"tensor {info.name!r}: the merge kernel counted NaN or Inf in elements "
                           f"{start}..{start + n - 1}, but none is there")
    raise MergeError(f"merging tensor {info.name!r} gave NaN or Inf at flat index "
                     f"{int(where[0, 0]) + start} from finite inputs: the {out.dtype} "
                     f"arithmetic overflowed; pass --allow-nonfinite to write it anyway")


def _merge_one(plan: _Plan, info, start: int, n: int, slot: int, state) -> tuple[torch.Tensor, dict]:
    k = len(plan.subs)
    check = info.is_float and not plan.allow_nonfinite
    if not info.is_float:
        views = [s.view(info.name, start, n) for s in plan.subs]
        differs = [plan.subs[i].path for i in range(1, k) if not torch.equal(views[i], views[0])]
        if differs:
            raise MergeError(f"non-float tensor {info.name!r} differs between {plan.subs[0].path} "
                             f"and {differs[0]}: it cannot be merged")
        return views[0].clone(), {}
    chunk = Chunk(subs=None, base=None, name=plan.aliases.get(info.name, info.name), start=start,
                  n=n, dtype=info.torch_dtype, out_dtype=plan.out_dtype or info.torch_dtype,
                  weights=plan.weights, settings=plan.settings, sampler=plan.sampler, state=state,
                  method=plan.method.name)
    if info.name in plan.fused:
        # in place from the mapped inputs: no copy, any K
        chunk.addrs = [s.address(info.name, start, n) for s in plan.subs]
        if plan.base is not None:
            chunk.base_addr = plan.base.address(info.name, start, n)
        chunk.check = check  # in the kernel's own pass
        chunk.out = plan.buffers[("out", info.torch_dtype, slot)][:n]
        out, counts = plan.impl.run_fused(chunk)
        bad = counts.pop("nonfinite", 0)
    else:
        if check:
            _name_nonfinite(plan, info, start, n)
        buf = plan.buffers.get((info.torch_dtype, slot))
        if buf is None:  # from the mapped inputs: no copy
            chunk.subs = [s.view(info.name, start, n) for s in plan.subs]
        else:  # gathered across sub-models, or bound for the GPU: one stack (pinned there)
            stack = buf[:k * n].view(k, n)
            for i, s in enumerate(plan.subs):
                stack[i].copy_(s.view(info.name, start, n))
            chunk.subs = stack.to(plan.dev, non_blocking=True)
        if plan.base is not None:
            chunk.base = plan.base.view(info.name, start, n).to(plan.dev, non_blocking=True)
        if plan.aux and run_data(plan.method).elementwise:  # else the method's prepare() reads it
            _check_aux(plan, info, start, n)
            chunk.aux = [a.view(info.name, start, n).to(plan.dev) for a in plan.aux]
        out, counts = plan.impl.run(chunk)
        if plan.out_dtype is not None:
            out = out.to(plan.out_dtype)
        bad = check and not bool(torch.isfinite(out).all())
    out = out.cpu()
    if bad:
        _name_nonfinite(plan, info, start, n, out)
    return out, counts


def _run(plan: _Plan) -> None:
    """Merge chunk by chunk: one worker thread merges chunk j + 1 while this thread writes
    chunk j (numba and torch release the GIL); their own threads parallelise each chunk.
    More workers measured no faster on 2 cores. The single worker runs the chunks in order,
    so a tensor's prepare() (run with its first chunk) is done before its other chunks."""
    prepare = getattr(plan.impl, "prepare", None)
    states: dict[str, object] = {}
    last_chunk = {info.name: j for j, (info, _, _) in enumerate(plan.items)}

    def task(j: int):
        info, start, n = plan.items[j]
        if prepare is not None and info.is_float and info.name not in states:
            states[info.name] = prepare(_tensor_reader(plan, info), info,
                                        plan.aliases.get(info.name, info.name), plan)
        result = _merge_one(plan, info, start, n, j % plan.window, states.get(info.name))
        if j == last_chunk[info.name]:
            states.pop(info.name, None)
        return result

    counts: dict[str, int] = {}
    window = plan.window
    with ThreadPoolExecutor(max_workers=1) as pool:
        # at most `window` chunks in flight; chunk j's buffer slot is reused by chunk
        # j + window, submitted only after chunk j is written
        pending = deque(pool.submit(task, j) for j in range(min(window, len(plan.items))))
        for j, (info, _, _) in enumerate(plan.items):
            out, c = pending.popleft().result()
            plan.writer.write(info.name, out)
            for key, v in c.items():
                counts[key] = counts.get(key, 0) + v
            if j + window < len(plan.items):
                pending.append(pool.submit(task, j + window))
    plan.writer.close()
    plan.stats.update(counts)


def _file_sources(inputs, base) -> list[Path]:
    """Where a merged model's config and tokenizer files come from, in order of preference:
    the base (when the method reads one), then the inputs; merge_into checks before any
    tensor is read that one of them has config.json."""
    sources = [Path(p) for p in ([base] if base is not None else []) + list(inputs)]
    if not any((p / "config.json").is_file() for p in sources):
        raise MergeError("no config.json in any input (" + ", ".join(map(str, sources))
                         + "): the merged model could not be loaded")
    return sources


def _finish(plan: _Plan, out_dir: Path, sources: list[Path], inputs, base, dtype,
            memory_budget, t0, anon_at_start) -> dict:
    copy_model_files(out_dir, sources)
    if dtype is not None and (out_dir / "config.json").is_file():
        cfg = json.loads((out_dir / "config.json").read_text())
        cfg["dtype"] = dtype
        (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    m = plan.method
    return {
        "method": m.name,
        "method_id": m.method_id(**plan.settings),
        "settings": plan.settings,
        "sub_models": [str(p) for p in inputs],
        "base": str(base) if base is not None else None,
        **({m.data: [str(a.path) for a in plan.aux]} if plan.aux else {}),
        "weights" if m.weights != "probabilities" else "probabilities": plan.weights,
        "seed": plan.settings.get("seed"),
        "rounds": plan.settings.get("rounds"),
        "dtype": dtype,
        "device": str(plan.dev),
        "memory_budget": memory_budget,
        "chunk_elements": plan.chunk_elements,
        "fused_tensors": len(plan.fused),
        "allow_nonfinite": plan.allow_nonfinite,
        "shards": plan.writer.names,
        "stats": plan.stats,
        "wall_s": time.perf_counter() - t0,
        "memory_mb": _peak_memory(anon_at_start),
    }


def merge_into(out_dir: str | Path, method: str, inputs: list[str | Path], *,
               base: str | Path | None = None, weights: list[float] | None = None,
               dtype: str | None = None, device: str = "cpu",
               memory_budget: int = DEFAULT_BUDGET, max_shard_bytes: int = DEFAULT_SHARD,
               chunk_elements: int | None = None, allow_nonfinite: bool = False,
               aux: list[str | Path] | None = None, adapter_rank: int | None = None,
               **settings) -> dict:
    """Merge `inputs` into the existing empty directory `out_dir` with the registry's
    method `method` and its `settings` (seed=, rounds=, density=, ...); returns the recipe.
    `aux`: the per-sub-model data of a method that reads some (Method.data; Fisher
    merging's diagonal Fisher), one directory per input, in the inputs' order.

    `weights` are the average's weights, the selection probabilities or the task vectors'
    weights, as the method's entry says. `chunk_elements` overrides the chunk size the
    budget gives (for tests of chunk invariance). The bytes depend neither on it nor on the
    thread count.

    LoRA runs (adapter directories) are merged exactly, on their updates ΔW_k, into a dense
    model (lora_runs.py); their base is `base` or, when None, the one their adapters name.
    `adapter_rank`: also write the merged update as an adapter of that rank (truncated SVD).
    """
    t0 = time.perf_counter()
    anon_at_start = _peak_memory().get("RssAnon")
    m, settings, w, out_dtype, dev = _validate(method, inputs, base, weights, settings, dtype, device)
    lora = None
    if any(is_adapter_dir(p) for p in inputs):
        lora = LoraRuns(inputs, base)
        base = lora.base_path
        check_svd_rank(adapter_rank, lora)
    elif adapter_rank is not None:
        raise MergeError("adapter_rank: the sub-models are full checkpoints, not LoRA runs")
    sources = _file_sources(inputs, base if m.needs_base or lora else None)
    if lora is None:
        plan = _plan(m, settings, w, inputs, base, out_dtype, dev, out_dir, memory_budget,
                     max_shard_bytes, chunk_elements, aux)
    else:  # the ΔW_k against zeros, in float32; the writer adds the base (lora_runs.py)
        writer = ComposingWriter(Path(out_dir), lora.base, lora.runs[0].tensors, out_dtype,
                                 max_shard_bytes, adapter_rank)
        plan = _plan(m, settings, w, lora.runs, lora.zero if m.needs_base else None, None, dev,
                     out_dir, memory_budget, max_shard_bytes, chunk_elements, aux, writer)
    plan.allow_nonfinite = bool(allow_nonfinite)
    checkpoints = plan.subs + ([plan.base] if plan.base is not None else []) + plan.aux \
        + ([lora.base] if lora else [])
    # the kernels fault the mapped pages in as they read them, on every thread at once
    # (pre-faulting them all at open, MAP_POPULATE, was one thread's serial work: with the
    # kernels of 2026-12-06 it cost a quarter of an average's time at K=8, AMD EPYC 2 cores)
    try:
        for c in checkpoints:
            c.open()
        _run(plan)
    finally:
        for c in checkpoints:
            c.close()
    recipe = _finish(plan, Path(out_dir), sources, inputs, base if m.needs_base or lora else None,
                     dtype, memory_budget, t0, anon_at_start)
    if lora is not None:
        recipe["lora"] = lora.record()
        if adapter_rank is not None:
            recipe["lora"]["svd"] = write_svd_adapter(Path(out_dir), lora, plan.writer.factors,
                                                      adapter_rank)
    return recipe


def model_card(recipe: dict) -> str:
    m = get(recipe["method"])
    k = len(recipe["sub_models"])
    lines = [f"# Merged model: {m.label} of {k} sub-models", "",
             "Made by ordermerge (Ju et al. 2024, selective parameter merging).", "",
             f"- method: `{m.name}` (`{recipe['method_id']}`): {m.doc}"]
    lines += [f"- {s.name}: {recipe['settings'][s.name]}" for s in m.settings]
    key = "probabilities" if m.weights == "probabilities" else "weights"
    lines.append(f"- {key}: {recipe[key]}")
    if recipe["base"]:
        lines.append(f"- base: `{recipe['base']}`")
    lines += ["- sub-models:"] + [f"  - `{p}`" for p in recipe["sub_models"]]
    lines += ["", "The full recipe, input hashes and versions are in `merge.json`.", ""]
    return "\n".join(lines)


def previous_merge(path: Path) -> str | None:
    """Why the directory `path` is not an earlier merge output (None: it is one): its own
    merge.json, a recipe with a method id, is what --overwrite may replace."""
    from ..utils import lacks_record
    return lacks_record(path, "merge.json", "method_id")


def merge(method: str, inputs: list[str | Path], out_dir: str | Path, *, overwrite: bool = False,
          before_rename=None, extra: dict | None = None, **kw) -> dict:
    """Merge into `out_dir` atomically: built in a temporary directory beside it and renamed
    on success, so on any failure nothing is at `out_dir`. Writes ``merge.json`` (recipe and
    provenance: input sha256, code and package versions, wall time, memory) and a model card.
    `extra`: more recipe fields (greedy soup's steps). `before_rename(tmp_dir, recipe)` may
    add files before the rename. See merge_into for the options."""
    from ..provenance import code_version, hash_inputs, package_versions
    from ..utils import OutputError, atomic_dir, check_output_dir

    try:
        out_dir = check_output_dir(out_dir, inputs=[*inputs, kw.get("base"), *(kw.get("aux") or [])],
                                   previous=previous_merge if overwrite else None,
                                   what="output")
    except OutputError as e:
        raise MergeError(str(e)) from None
    if out_dir.exists() and not overwrite:
        raise MergeError(f"{out_dir} already exists (pass overwrite=True / --overwrite)")
    with atomic_dir(out_dir) as tmp:
        recipe = merge_into(tmp, method, inputs, **kw)
        recipe.update(extra or {})
        sources = [*inputs, *([recipe["base"]] if recipe["base"] is not None else []),
                   *(kw.get("aux") or [])]
        recipe["provenance"] = {"inputs_sha256": hash_inputs(sources), "code": code_version(),
                                "packages": package_versions()}
        (tmp / "merge.json").write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(model_card(recipe))
        if before_rename is not None:
            before_rename(tmp, recipe)
    return recipe
