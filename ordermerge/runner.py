"""What every entry point in scripts/ shares: arguments, threads, logging, timing."""
from __future__ import annotations

import argparse
import atexit
import json
import os
import sys

from .provenance import now


# with this variable set, every entry point ends its log with the package files it imported
# and the distributions whose modules it imported: the workflow test checks them against
# the code inputs its rule declares (ordermerge.plan) and the packages its envs/ file pins
TRACE_ENV = "ORDERMERGE_TRACE_IMPORTS"
TRACE = "ordermerge.imports:"
TRACE_PACKAGES = "ordermerge.packages:"


def imported_files() -> list[str]:
    """The package's modules this process imported, as files relative to the working
    directory."""
    return sorted({os.path.relpath(m.__file__) for name, m in list(sys.modules.items())
                   if name.split(".")[0] == "ordermerge" and getattr(m, "__file__", None)})


def imported_distributions() -> list[str]:
    """The installed distributions whose top-level modules this process imported: those
    its import statements named where the warm worker recorded them (a forked job shares
    the worker's preloaded modules, ordermerge/warm.py), else those in sys.modules."""
    import builtins
    from importlib.metadata import packages_distributions
    dists = packages_distributions()
    recorded = getattr(builtins.__import__, "ordermerge_tops", None)
    names = recorded if recorded is not None else list(sys.modules)
    # not the interpreter's start-up hooks (a private name: setuptools' _distutils_hack)
    tops = {name.split(".")[0] for name in names if not name.startswith("_")}
    return sorted({d for top in tops for d in dists.get(top, ())})


def _trace_imports() -> None:
    print(f"{TRACE} {' '.join(imported_files())}", file=sys.stderr, flush=True)
    print(f"{TRACE_PACKAGES} {' '.join(imported_distributions())}", file=sys.stderr, flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    if os.environ.get(TRACE_ENV):
        atexit.register(_trace_imports)
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=json.loads, default={},
                   help="the rule's params as a JSON object")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rule", default="manual", help="rule name for the provenance record")
    return p


def _message_only(kind, exc, tb, extra: tuple = ()) -> None:
    """Bad input to the library (utils.InputError, whose message names what is wrong) is
    one line on stderr, exit status 1; anything else keeps its traceback."""
    from .utils import InputError
    if issubclass(kind, (InputError, *extra)):
        print(str(exc), file=sys.stderr, flush=True)
    else:
        sys.__excepthook__(kind, exc, tb)


def one_line_errors(*kinds: type) -> None:
    """For an entry point that does not call start(): InputError and `kinds` (errors whose
    message already names the file, line or key) end the job in one line, not a traceback."""
    sys.excepthook = lambda kind, exc, tb: _message_only(kind, exc, tb, kinds)


def start(args: argparse.Namespace, models: bool = True) -> str:
    """Fix the thread count (training results depend on it bit-for-bit) and return the start
    time. `models=False` for entry points that never run a model: they skip transformers'
    logging set-up and deterministic-algorithm mode (which imports torch._inductor, about
    1.8 s per job); the merge engine is deterministic by construction."""
    import torch

    from .utils import exit_on_sigterm
    exit_on_sigterm()  # a cancelled job removes its temporary outputs
    sys.excepthook = _message_only
    if models:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    return now()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def record(args: argparse.Namespace, output, start_time: str, inputs=(), seeds: dict | None = None,
           **kw):
    """The provenance record of `output` (provenance.write_record) with this job's rule and
    params; `kw`: final, derived, params (what the script records instead of its params)."""
    from .provenance import write_record
    kw.setdefault("params", args.params)
    return write_record(output, rule=args.rule, seeds=seeds or {}, inputs=list(inputs),
                        start=start_time, **kw)
