"""The per-run data a data-aware merge method reads, one entry per kind: a method's registry
entry names its kind (``Method.data``), and the entry here says once everything the merge
engine, the workflow and the command line need of it: the rule that makes it (declared with
its stage, script and cost model in workflow/stages.py), the script that makes the merge,
the merge job's inputs, the merge command's arguments that pass them, the params that
replace the merge weights, the ``ordermerge merge`` flags that take it, and, for data the
engine reads beside the sub-models, how it is opened and checked against them and what each
chunk of it must hold. The engine (engine.py), the plan (workflow/rules/train_merge.py),
``scripts/merge.py`` and the command line look a method's data up here; none of them
branches on its kind.

A new data-aware method adds its entry here, and its producing rule (rules/*.smk,
workflow/stages.py, a ``cost_`` model in workflow/projection.py)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

# the readers import the checkpoint I/O (and torch) when they run: the command line looks
# entries up before its argument checks, which import nothing heavy


@dataclass(frozen=True)
class RunData:
    kind: str                  # Method.data
    rule: str                  # the rule that makes it (stages.RULES)
    script: str                # the script that makes the merge (scripts/)
    keys: tuple[str, ...]      # the names of its inputs in the merge job
    # the merge job's inputs: (plan, wildcards, the method's settings) -> {key: path(s)}
    inputs: Callable[..., dict]
    # the merge command's arguments, from the job's inputs (by `keys`)
    args: Callable[..., str]
    flags: tuple[str, ...]     # the `ordermerge merge` flags that take it
    # the job's params in place of the merge weights: (plan, wildcards) -> dict; None: the weights
    params: Callable[..., dict] | None = None
    # data the engine reads beside the sub-models: (method, paths, sub-models, settings) ->
    # the opened files, checked against the sub-models (MergeError naming what is wrong)
    open: Callable[..., list] | None = None
    # what each chunk of it must hold: (opened files, tensor name, start, n) -> None or MergeError
    check_chunk: Callable[..., None] | None = None
    # read beside each chunk, element for element (the Fisher); False: read whole per
    # tensor by the method's prepare() (the Grams, [in, in] per [out, in] weight)
    elementwise: bool = True


def _fisher_inputs(plan, w, settings) -> dict:
    """Each run's diagonal Fisher over the method's rows (rule diagonal_fisher)."""
    return {"fisher_dirs": [plan.fisher_dir(w.model, w.task, w.scheme, r, w.epoch, settings["rows"])
                            for r in plan.runs]}


def _gram_inputs(plan, w, settings) -> dict:
    """Each run's input Grams over the method's rows (rule input_gram)."""
    return {"gram_dirs": [plan.gram_dir(w.model, w.task, w.scheme, r, w.epoch, settings["rows"])
                          for r in plan.runs]}


def _validation_inputs(plan, w, settings) -> dict:
    """Each run's record on the validation split (rule validate_runs), and the split: greedy
    soup scores its candidates on it."""
    return {"validation": [plan.validation_record(w.model, w.task, w.scheme, w.epoch, r)
                           for r in plan.runs],
            "validation_split": plan.data(w.task, "validation")}


# ------------------------------------------------------------ per-run statistics
def _open_per_run(method: str, aux, subs: list, settings: dict, flag: str, meta_name: str,
                  expected) -> list:
    """Each sub-model's statistic (a Fisher, the Grams): one checkpoint directory of float32
    tensors per sub-model, each tensor of the shape `expected(name, sub-model tensor)` says
    (None: the tensor needs none), made from that very sub-model over the method's rows."""
    from .st_io import Checkpoint, CheckpointError, MergeError
    if aux is None or len(aux) != len(subs):
        raise MergeError(f"{method} needs {flag} with one file per sub-model "
                         f"({len(subs)}), got {0 if aux is None else len(aux)}")
    try:
        out = [Checkpoint(p) for p in aux]
    except CheckpointError as e:
        raise MergeError(f"{flag}: {e}") from None
    for a, sub in zip(out, subs):
        for name, t in sub.tensors.items():
            shape = expected(name, t)
            if shape is None:
                continue
            u = a.tensors.get(name)
            if u is None:
                raise MergeError(f"{flag} {a.path}: no tensor {name!r} (sub-model {sub.path} has it)")
            if tuple(u.shape) != tuple(shape) or u.dtype != "F32":
                raise MergeError(f"{flag} {a.path}: tensor {name!r} is {list(u.shape)} {u.dtype}, "
                                 f"expected {list(shape)} F32 (for {sub.path})")
    _check_identity(out, subs, settings, flag, meta_name)
    return out


def _open_fishers(method: str, aux, subs: list, settings: dict) -> list:
    """Each sub-model's diagonal Fisher: the sub-models' float tensors by name and shape."""
    return _open_per_run(method, aux, subs, settings, "--fisher", "fisher.json",
                         lambda name, t: tuple(t.shape) if t.is_float else None)


def _open_grams(method: str, aux, subs: list, settings: dict) -> list:
    """Each sub-model's input Grams: [in, in] for the linear weights the file names (those
    it leaves out are averaged); each file names the same weights."""
    from .st_io import MergeError
    names = None

    def expected(name, t):
        return (t.shape[1], t.shape[1]) if name in names and len(t.shape) == 2 and t.is_float else None
    try:
        from .st_io import Checkpoint, CheckpointError
        names = set(Checkpoint(aux[0]).tensors) if aux else set()
    except CheckpointError:
        names = set()
    out = _open_per_run(method, aux, subs, settings, "--gram", "gram.json", expected)
    for a in out[1:]:
        if set(a.tensors) != names:
            other = sorted(set(a.tensors) ^ names)[0]
            raise MergeError(f"--gram {a.path} and {out[0].path} differ on tensor {other!r}: "
                             "the runs' Grams cover the same layers")
    for name in names & set(subs[0].tensors):  # a LoRA run's: the layers it adapts
        if not (subs[0].tensors[name].is_float and len(subs[0].tensors[name].shape) == 2):
            raise MergeError(f"--gram {out[0].path}: tensor {name!r} is not a 2-D float weight of "
                             f"{subs[0].path}")
    return out


def _read_meta(a, flag: str, meta_name: str) -> dict:
    """A statistic directory's meta file (fisher_info.run_meta), checked for what the merge
    compares."""
    from .st_io import MergeError
    f = a.path / meta_name
    try:
        meta = json.loads(f.read_text())
        assert isinstance(meta, dict) and isinstance(meta["model"], str)
        assert isinstance(meta["model_sha256"], dict) and isinstance(meta["rows"], int)
        assert isinstance(meta.get("row_ids", []), list)
    except (OSError, ValueError, KeyError, AssertionError) as e:
        why = "missing" if isinstance(e, FileNotFoundError) else "not readable or lacks a field"
        raise MergeError(f"{flag} {a.path}: {meta_name} {why} (model, model_sha256, rows: what "
                         "it was made from, as its rule writes it): the merge cannot check that "
                         "it is its sub-model's") from None
    return meta


def _check_identity(stats: list, subs: list, settings, flag: str, meta_name: str) -> None:
    """Each statistic was made from the very sub-model it is given with (the sha256 of its
    weight files, taken from the sub-model's record where its files are unchanged), over
    the method's rows, the same rows for every sub-model."""
    from ..provenance import file_hashes
    from .st_io import MergeError
    metas = [_read_meta(a, flag, meta_name) for a in stats]
    hashes = [file_hashes(s.path, [f.name for f in s.files()]) for s in subs]
    what, plural = ("Fisher", "Fishers") if flag == "--fisher" else ("Grams", "Grams")
    for i, (a, meta) in enumerate(zip(stats, metas)):
        if meta["model_sha256"] != hashes[i]:
            j = next((j for j, h in enumerate(hashes) if h == meta["model_sha256"]), None)
            if j is not None:
                raise MergeError(f"{flag} {a.path} is the {what} of sub-model {j + 1} "
                                 f"({subs[j].path}), given for sub-model {i + 1} ({subs[i].path}): "
                                 f"give the {plural} in the sub-models' order")
            raise MergeError(f"{flag} {a.path} was made from {meta['model']}, whose weights "
                             f"are not those of sub-model {i + 1} ({subs[i].path})")
        if settings.get("rows") is not None and meta["rows"] != settings["rows"]:
            raise MergeError(f"{flag} {a.path} is over {meta['rows']} rows, but the method's "
                             f"rows setting is {settings['rows']}")
        if meta.get("row_ids") != metas[0].get("row_ids"):
            raise MergeError(f"{flag} {a.path} is over other rows than {stats[0].path}: the "
                             f"{plural} of one merge weigh the runs on the same rows")


def _check_fisher_chunk(fishers: list, name: str, start: int, n: int) -> None:
    """A diagonal Fisher is finite and non-negative (a mean of squares): a NaN or a negative
    value would weigh the runs wrongly without an error. One min/max per Fisher chunk."""
    import torch

    from .st_io import MergeError
    for a in fishers:
        v = a.view(name, start, n)
        low, high = (x.item() for x in torch.aminmax(v))
        if not (low >= 0 and math.isfinite(high)):  # NaN fails both
            bad = int((~(v >= 0) | ~torch.isfinite(v)).nonzero()[0, 0])
            raise MergeError(f"--fisher {a.path}: tensor {name!r} holds {v[bad].item()} at "
                             f"flat index {start + bad}: a diagonal Fisher is finite and "
                             "non-negative")


RUN_DATA = {d.kind: d for d in [
    RunData("diagonal_fisher", "diagonal_fisher", "merge.py", ("fisher_dirs",), _fisher_inputs,
            lambda input: "--fisher " + " ".join(input.fisher_dirs), ("--fisher",),
            open=_open_fishers, check_chunk=_check_fisher_chunk),
    RunData("input_gram", "input_gram", "merge.py", ("gram_dirs",), _gram_inputs,
            lambda input: "--gram " + " ".join(input.gram_dirs), ("--gram",),
            open=_open_grams, elementwise=False),
    RunData("validation_records", "validate_runs", "greedy_soup.py",
            ("validation", "validation_split"), _validation_inputs,
            lambda input: ("--validation " + " ".join(input.validation)
                           + f" --validation-split {input.validation_split}"),
            ("--validation", "--validation-split", "--task"),
            # greedy soup evaluates its candidates as the runs were evaluated
            params=lambda plan, w: {"task": w.task, "evaluate": plan.eval_cfg(
                w.task, "soup", w.epoch, w.scheme, w.model)}),
]}


def run_data(method) -> RunData | None:
    """The per-run data merge method `method` (a registry entry) reads; None: none."""
    if method.data is None:
        return None
    if method.data not in RUN_DATA:
        raise KeyError(f"merge method {method.name!r} reads {method.data!r}, which "
                       f"ordermerge/workflow/rundata.py does not declare")
    return RUN_DATA[method.data]


def held_by(input) -> list[RunData]:
    """The entries whose data a merge job's inputs hold (by their input names)."""
    return [d for d in RUN_DATA.values() if set(d.keys) <= set(input.keys())]
