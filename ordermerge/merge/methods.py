"""The registry of merge methods: one entry per method, read by the engine, the CLI, the
workflow rules and the tables. Nothing else lists method names, except greedy soup's own
rule (rules/merge.smk, `merge_soup`), which names its id because it evaluates candidates.

An entry says what a method is called (its CLI / config name and the prefix of its id),
which settings it takes (each one a part of the id, so that a path carrying the id
changes when a setting does: ``avg``, ``select-s3``, ``resample-n4-s3``,
``ties-d0.2-l1.0``), whether it needs the base model, how its weights are read, its
source files (a merge depends on them: editing one reruns only that method's merges),
its table label and the module holding its arithmetic.

A method module provides ``run(chunk) -> (merged, counts)`` (torch, any device) and
optionally ``run_fused(chunk)`` with ``fused_available(dtype, out_dtype, method)`` (numba CPU
kernels giving the same bytes; with ``chunk.check`` their counts' "nonfinite" is non-zero
where an input, the base or the output holds NaN or Inf), ``prepare(reader, info, name, plan)`` (a per-tensor pass
before the tensor's chunks, e.g. TIES' exact top-k thresholds) and ``STACKED = True``
(its torch path gathers across sub-models: give it a [K, n] stack).

This module imports neither torch nor numpy, so the CLI's --help and the workflow's
planning stay fast.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

_NUMBER = {"int": r"\d+", "float": r"\d+(?:\.\d+)?(?:e-?\d+)?", "bool": r"[01]"}


class _OutOfRange(ValueError):
    pass


@dataclass(frozen=True)
class Setting:
    """One setting of a method: keyword `name`, written `-{key}{value}` in the id."""
    name: str
    key: str
    kind: str  # int | float | bool | choice
    default: Any = None  # None: required
    choices: tuple[str, ...] = ()
    # left out of the id at its default (keeps the common ids short); any other value is
    # written, so distinct settings always give distinct ids
    omit_default: bool = False
    doc: str = ""
    # the meaningful interval of a float setting beyond ">= 0, finite", as
    # (low, high, low_open, high_open): density (0, 1], drop [0, 1)
    interval: tuple | None = None

    def pattern(self) -> str:
        body = "|".join(map(re.escape, self.choices)) if self.kind == "choice" else _NUMBER[self.kind]
        group = f"-{re.escape(self.key)}(?P<{self.name}>{body})"
        return f"(?:{group})?" if self.omit_default else group

    def check(self, value: Any) -> Any:
        """The value in its canonical type; ValueError naming the setting when it is not one."""
        try:
            if self.kind == "int":
                if isinstance(value, str) and value.isdigit():
                    value = int(value)
                if isinstance(value, bool) or int(value) != value or int(value) < 0:
                    raise ValueError
                return int(value)
            if self.kind == "float":
                v = float(value)
                if not v >= 0 or v == float("inf"):
                    raise ValueError
                if self.interval is not None:
                    lo, hi, lo_open, hi_open = self.interval
                    if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
                        raise _OutOfRange(f"setting {self.name!r}: {value!r} is outside "
                                         f"{'(' if lo_open else '['}{lo:g}, {hi:g}"
                                         f"{')' if hi_open else ']'}")
                return v
            if self.kind == "bool":
                if value in (True, False, 0, 1, "0", "1", "true", "false"):
                    return value in (True, 1, "1", "true")
                raise ValueError
            if value in self.choices:
                return value
        except _OutOfRange:
            raise
        except (TypeError, ValueError):
            pass
        want = {"int": "an integer >= 0", "float": "a finite number >= 0", "bool": "true or false",
                "choice": f"one of {', '.join(self.choices)}"}[self.kind]
        raise ValueError(f"setting {self.name!r}: {value!r} is not {want}")

    def format(self, value: Any) -> str:
        if self.kind == "float":
            return repr(float(value))
        if self.kind == "bool":
            return "1" if value else "0"
        return str(value)


SEED = Setting("seed", "s", "int", 0, doc="merge seed of the counter-based draws")
LAMBDA = Setting("lambda", "l", "float", 1.0, doc="scale of the merged task vector")
DENSITY = Setting("density", "d", "float", 0.2, interval=(0, 1, True, False),
                  doc="fraction of each task vector's elements kept per tensor (largest magnitudes), in (0, 1]")
DROP = Setting("drop", "p", "float", 0.5, interval=(0, 1, False, True),
               doc="DARE: probability of dropping an element of a task vector, in [0, 1)")
RESCALE = Setting("rescale", "r", "choice", "paper", ("paper", "l1"), omit_default=True,
                  doc="DARE: kept elements x 1/(1-p) (paper) or x the ratio that restores the tensor's L1 norm (l1, mergekit >= 0.1.5)")
NORMALIZE = Setting("normalize", "n", "bool", True, omit_default=True,
                    doc="divide the agreeing sum by the sum of the agreeing weights (the disjoint mean); 0: keep the sum")
DARE_NORMALIZE = Setting("normalize", "n", "bool", False, omit_default=True,
                         doc="divide the agreeing sum by the sum of the agreeing weights (off by default, as in mergekit's dare_ties)")
ROUNDS = Setting("rounds", "n", "int", 1, doc="resample rounds")
SCE_SELECT = Setting("select_topk", "t", "float", 0.1, interval=(0, 1, False, False),
                     doc="SCE: fraction of the positions of nonzero variance across the runs kept (the highest variances), in [0, 1]; 1 keeps all (mergekit's default)")
MAX_ITER = Setting("max_iter", "i", "int", 10, omit_default=True, doc="Karcher mean: iterations at most")
TOL = Setting("tol", "e", "float", 1e-5, omit_default=True,
              doc="Karcher mean: the norm and angle below which a vector or step counts as zero")
EPSILON = Setting("epsilon", "e", "float", 0.1, interval=(0, 0.5, False, True),
                  doc="DELLA: keep probabilities range over density +- epsilon by magnitude rank in each row")
BC_DENSITY = Setting("density", "d", "float", 0.9, interval=(0, 1, False, False),
                     doc="Breadcrumbs: fraction of each task vector's entries kept per tensor, below the outliers, in [0, 1]")
GAMMA = Setting("gamma", "g", "float", 0.01, interval=(0, 1, False, False),
                doc="Breadcrumbs: fraction of each task vector's largest magnitudes dropped as outliers")
GRAM_ROWS = Setting("rows", "n", "int", 32,
                    doc="RegMean: training rows whose linear-layer inputs make each run's Gram matrices")
ALPHA = Setting("alpha", "a", "float", 0.9, interval=(0, 1, False, False),
                doc="RegMean: the Grams' off-diagonal entries scaled by alpha (1: exact least squares)")
RIDGE = Setting("ridge", "r", "float", 0.0, omit_default=True,
                doc="RegMean: ridge, times the mean diagonal of the summed Gram (0: a singular sum is refused)")
FISHER_ROWS = Setting("rows", "n", "int", 32,
                      doc="Fisher merging: training rows whose squared log-likelihood gradients estimate each run's diagonal Fisher")


@dataclass(frozen=True)
class Method:
    name: str  # --method / config `method:`
    prefix: str  # of the id
    label: str  # table row
    module: str  # ordermerge.merge.<module>: the arithmetic
    doc: str
    settings: tuple[Setting, ...] = ()
    needs_base: bool = False
    min_models: int = 1
    # how weights are read: average (sum 1, default 1/K), probabilities (sum 1, default
    # 1/K), task (one per task vector, default 1 each), none (the method weighs the runs
    # itself: weights given are refused)
    weights: str = "average"
    # files of this package its bytes depend on that its module does not import (loaded by
    # name); those it imports are found by reading them (`sources`)
    helpers: tuple[str, ...] = ()
    # the fused task-vector kernel's mode (fused_tv.py: 0 task arithmetic, 1 TIES, 2 DARE,
    # 3 DARE-TIES), None where the method has no such kernel
    fused_tv_mode: int | None = None
    # per-sub-model data the method reads, made by a rule of its own: "diagonal_fisher" (one
    # float32 checkpoint per sub-model, read by the engine beside it: `--fisher`),
    # "input_gram" (one float32 [in, in] Gram per linear weight and sub-model: `--gram`),
    # "validation_records" (each run's validation record: greedy soup evaluates candidate
    # soups before merging)
    data: str | None = None
    # the torch path's temporaries per chunk element beside its K inputs and outputs (the
    # memory budget's estimate, engine.bytes_per_element): fp32 accumulator, term and input
    # for the average, indices and draws for the drawing methods
    temp_bytes: int = 5 * 8
    # a check across settings (ValueError naming them), beyond each setting's own
    constraint: Any = field(default=None, compare=False, repr=False)
    _regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        body = re.escape(self.prefix) + "".join(s.pattern() for s in self.settings)
        object.__setattr__(self, "_regex", re.compile(body))

    @property
    def random(self) -> bool:
        """Has a seed: a table reports it as mean and std over seeds."""
        return any(s.name == "seed" for s in self.settings)

    @property
    def sources(self) -> tuple[str, ...]:
        """Its module and helpers (relative to this package); the workflow adds what the
        module imports, read from its source (ordermerge.plan.Plan.merge_code)."""
        return (f"{self.module}.py", *self.helpers)

    def entry(self) -> dict:
        """This entry as JSON-able data: what a merge of the method depends on in the
        registry (the workflow's merge rules take it as a param, so that editing one entry
        reruns that method's merges only)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("_regex", "constraint")}
        out["settings"] = [asdict(s) for s in self.settings]
        return out

    def impl(self):
        return importlib.import_module(f"{__package__}.{self.module}")

    def resolve(self, settings: dict) -> dict:
        """Every setting in canonical type, defaults filled in; ValueError for unknown keys."""
        known = {s.name: s for s in self.settings}
        extra = sorted(set(settings) - set(known))
        if extra:
            raise ValueError(f"merge method {self.name!r} has no setting {extra[0]!r} "
                             f"(its settings: {', '.join(known) or 'none'})")
        out = {}
        for s in self.settings:
            value = settings.get(s.name, s.default)
            if value is None:
                raise ValueError(f"merge method {self.name!r}: setting {s.name!r} is required")
            out[s.name] = s.check(value)
        if self.constraint is not None:
            try:
                self.constraint(out)
            except ValueError as e:
                raise ValueError(f"merge method {self.name!r}: {e}") from None
        return out

    def method_id(self, **settings) -> str:
        values = self.resolve(settings)
        return self.prefix + "".join(
            f"-{s.key}{s.format(values[s.name])}" for s in self.settings
            if not (s.omit_default and values[s.name] == s.default))

    def row_id(self, **settings) -> str:
        """The id without the seed: the merges that a table row averages over seeds."""
        values = self.resolve(settings)
        return self.prefix + "".join(
            f"-{s.key}{s.format(values[s.name])}" for s in self.settings
            if s.name != "seed" and not (s.omit_default and values[s.name] == s.default))

    def parse(self, mid: str) -> dict | None:
        m = self._regex.fullmatch(mid)
        if m is None:
            return None
        found = {k: v for k, v in m.groupdict().items() if v is not None}
        return self.resolve(found)


@dataclass
class Chunk:
    """What a method's ``run`` gets: elements start .. start+n-1 of one tensor."""
    subs: Any  # the K sub-models' elements: a list of n-element tensors, or a [K, n] stack
    base: Any  # the base's n elements (methods that need it), else None
    name: str  # the draws' tensor name (a shared tensor takes its owner's)
    start: int
    n: int
    dtype: Any  # the inputs' torch dtype
    out_dtype: Any  # the output's torch dtype
    weights: list[float]
    settings: dict
    sampler: Any = None  # rng.Sampler of the methods that draw sub-models
    state: Any = None  # what the method's prepare() found for this tensor
    method: str = ""  # the registry name (a module may serve several entries)
    aux: Any = None  # per-sub-model data (Method.data): K float32 views of this chunk
    addrs: list[int] | None = None  # fused path: the inputs' addresses in memory
    base_addr: int | None = None
    # fused path: count NaN/Inf (counts["nonfinite"] > 0 where an input, the base or the
    # output holds one; the engine then names it)
    check: bool = False
    out: Any = None  # fused path: n elements of the output dtype to write into (reused)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("average", "avg", "weighted-avg", "average",
           "weighted average: theta = sum_i w_i theta_i (w_i = 1/K by default)", temp_bytes=3 * 4),
    Method("select", "select", "param-selection", "select",
           "parameter selection: each element from one sub-model drawn with probability p_i",
           (SEED,), min_models=2, weights="probabilities"),
    Method("resample", "resample", "resample", "resample",
           "selection + n resample rounds: redraw where the chosen element equals the base",
           (ROUNDS, SEED), needs_base=True, min_models=2, weights="probabilities"),
    Method("model_stock", "model-stock", "Model Stock", "model_stock",
           "per tensor: theta = t avg_i theta_i + (1 - t) theta_base, t = K cos / (1 + (K-1) cos), "
           "cos the mean pairwise cosine of the task vectors (Jang et al. 2024)",
           needs_base=True, min_models=2, temp_bytes=4 * 4),
    Method("fisher", "fisher", "Fisher", "fisher",
           "theta = sum_i w_i F_i theta_i / sum_i w_i F_i per element, F_i run i's diagonal Fisher "
           "(mean squared gradient of the log-likelihood over n training rows; Matena and Raffel 2022); "
           "the weighted average where every F_i is 0",
           (FISHER_ROWS,), min_models=2, data="diagonal_fisher", temp_bytes=4 * 4),
    Method("regmean", "regmean", "RegMean", "regmean",
           "per linear layer W* = (sum_i w_i G~_i)^-1 sum_i w_i G~_i W_i (G~_i run i's input Gram "
           "over n training rows, off-diagonal x alpha; Jin et al. 2023); every other tensor "
           "the weighted average",
           (GRAM_ROWS, ALPHA, RIDGE), min_models=2, data="input_gram", temp_bytes=3 * 4),
    Method("greedy_soup", "greedy-soup", "greedy soup", "greedy_soup",
           "runs by validation score, best first; each added to the soup if the uniform average "
           "does not score lower on the validation split (Wortsman et al. 2022); theta = the "
           "uniform average of the runs kept",
           min_models=2, data="validation_records", temp_bytes=3 * 4),
    Method("task_arithmetic", "task-arithmetic", "task-arithmetic", "task_arithmetic",
           "theta_base + lambda sum_i w_i tau_i", (LAMBDA,), needs_base=True, weights="task", fused_tv_mode=0),
    Method("ties", "ties", "TIES", "ties",
           "trim each tau_i to its top-density magnitudes, elect signs, disjoint mean, x lambda",
           (DENSITY, LAMBDA, NORMALIZE), needs_base=True, weights="task", fused_tv_mode=1),
    Method("ties_select", "ties-select", "TIES-select", "ties",
           "TIES' trim and sign election, then one agreeing task vector per element, drawn uniformly",
           (DENSITY, LAMBDA, SEED), needs_base=True, min_models=2, weights="task"),
    Method("dare_linear", "dare-linear", "DARE", "dare",
           "drop each tau_i element with probability p, rescale the kept, theta_base + lambda sum_i w_i tau_i",
           (DROP, RESCALE, LAMBDA, SEED), needs_base=True, weights="task", fused_tv_mode=2),
    Method("dare_ties", "dare-ties", "DARE-TIES", "dare",
           "DARE's drop and rescale, then TIES' sign election and disjoint mean",
           (DROP, RESCALE, LAMBDA, DARE_NORMALIZE, SEED), needs_base=True, weights="task", fused_tv_mode=3),
    Method("dare_resample", "dare-resample", "DARE-resample", "dare",
           "selection over DARE-dropped task vectors: redraw where the drawn tau is dropped or zero",
           (DROP, RESCALE, ROUNDS, LAMBDA, SEED), needs_base=True, min_models=2, weights="task"),
    Method("sce", "sce", "SCE", "sce",
           "keep the positions of highest variance across the task vectors, weigh run i by its "
           "mean squared tau_i, erase entries against the elected sign; theta_base + the "
           "weighted mean of the rest (Wan et al. 2024)",
           (SCE_SELECT,), needs_base=True, min_models=2, weights="none", temp_bytes=16 * 8),
    Method("karcher", "karcher", "Karcher mean", "sphere",
           "per tensor, the weighted Karcher (Riemannian) mean of the runs' unit weight vectors, "
           "scaled by their weighted mean norm",
           (MAX_ITER, TOL), min_models=2, temp_bytes=3 * 4),
    Method("multislerp", "multislerp", "Multi-SLERP", "sphere",
           "per tensor, spherical interpolation of the task vectors: the direction of the "
           "weighted mean of their unit vectors at their weighted mean norm, plus theta_base",
           needs_base=True, min_models=2, temp_bytes=4 * 4),
    Method("breadcrumbs", "breadcrumbs", "Breadcrumbs", "sparse",
           "drop each tau_i's largest gamma and smallest magnitudes, keep density; "
           "theta_base + lambda sum_i w_i tau_i (Davari and Belilovsky 2024)",
           (BC_DENSITY, GAMMA, LAMBDA), needs_base=True, weights="task"),
    Method("breadcrumbs_ties", "breadcrumbs-ties", "Breadcrumbs-TIES", "sparse",
           "Breadcrumbs' sparsification, then TIES' sign election and disjoint sum",
           (BC_DENSITY, GAMMA, LAMBDA, DARE_NORMALIZE), needs_base=True, weights="task"),
    Method("della", "della", "DELLA", "sparse",
           "drop each tau_i entry with a probability that falls with its magnitude rank in its "
           "row, rescale the kept, TIES' sign election and disjoint mean (Deep et al. 2024)",
           (DENSITY, EPSILON, RESCALE, LAMBDA, NORMALIZE, SEED), needs_base=True, weights="task",
           constraint=lambda s: _della_check(s)),
    Method("della_linear", "della-linear", "DELLA-linear", "sparse",
           "DELLA's drop and rescale, then theta_base + lambda sum_i w_i tau'_i",
           (DENSITY, EPSILON, RESCALE, LAMBDA, SEED), needs_base=True, weights="task",
           constraint=lambda s: _della_check(s)),
]}


def _della_check(s: dict) -> None:
    """DELLA's keep probabilities must stay in (0, 1), as mergekit requires."""
    if s["density"] < 1 and not (s["density"] - s["epsilon"] > 0 and s["density"] + s["epsilon"] < 1):
        raise ValueError(f"density {s['density']:g} and epsilon {s['epsilon']:g}: density - "
                         "epsilon must be > 0 and density + epsilon < 1")

def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown merge method {name!r}; known: {', '.join(METHODS)}") from None


def method_id(name: str, **settings) -> str:
    """``method_id("resample", rounds=4, seed=3)`` -> ``resample-n4-s3``."""
    return get(name).method_id(**settings)


def parse_method_id(mid: str) -> tuple[str, dict]:
    """``resample-n4-s3`` -> ("resample", {"rounds": 4, "seed": 3})."""
    for m in METHODS.values():
        found = m.parse(mid)
        if found is not None:
            return m.name, found
    raise ValueError(f"not a merge method id: {mid!r} (known forms: "
                     + ", ".join(m.method_id() for m in METHODS.values()) + ")")


def _unnamed(pattern: str) -> str:
    """`pattern` with its named groups made plain groups (Snakemake wildcard constraints
    cannot name groups)."""
    return re.sub(r"\(\?P<\w+>", "(?:", pattern)


def id_pattern() -> str:
    """A regular expression matching every method id (a wildcard constraint)."""
    return "|".join(_unnamed(m._regex.pattern) for m in METHODS.values())


def expand(specs: list[dict], seeds: list[int], rounds: int | None = None) -> list[str]:
    """The method ids of config method specs (``{method: ties, density: 0.2}``): a method
    with a seed gets one id per seed unless the spec names one; a `rounds` setting left
    out takes `rounds` (the task's resample_rounds). ValueError names the bad spec."""
    ids = []
    for spec in specs:
        m = get(spec.get("method", "<missing>"))
        settings = {k: v for k, v in spec.items() if k != "method"}
        if rounds is not None and "rounds" not in settings and any(s.name == "rounds" for s in m.settings):
            settings["rounds"] = rounds
        if m.random and "seed" not in settings:
            ids += [m.method_id(**settings, seed=s) for s in seeds]
        else:
            ids.append(m.method_id(**settings))
    return list(dict.fromkeys(ids))


def row_of(mid: str) -> tuple[str, str]:
    """(row id, label) of a merge's table row: seeds of one setting share a row."""
    name, settings = parse_method_id(mid)
    m = get(name)
    return m.row_id(**settings), m.label


def row_names(mids: list[str]) -> dict[str, str]:
    """Table row name of each merge id: the method's label, or label (row id) where one
    label would otherwise cover several settings. In registry order."""
    rows = {mid: row_of(mid) for mid in mids}
    per_label: dict[str, set] = {}
    for rid, label in rows.values():
        per_label.setdefault(label, set()).add(rid)
    return {mid: label if len(per_label[label]) == 1 else f"{label} ({rid})"
            for mid, (rid, label) in rows.items()}
