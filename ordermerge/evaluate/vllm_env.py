"""Which Python runs the vllm backend's worker. Standard library only: the workflow's config
check asks it before any job runs (so that a run that cannot start vLLM removes no earlier
output), and the backend asks it again when it starts a worker."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ENV = "ORDERMERGE_VLLM_PYTHON"
INSTALL = "see docs/vllm.md"


def find_worker_python() -> tuple[str | None, str | None]:
    """(the interpreter, None): $ORDERMERGE_VLLM_PYTHON, else this one if it has vllm; or
    (None, why there is none), one line."""
    py = os.environ.get(ENV)
    if py:
        if not (Path(py).is_file() and os.access(py, os.X_OK)):
            return None, f"${ENV} = {py!r} is not an executable file"
        return py, None
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable, None
    return None, (f"this Python has no vllm and ${ENV} is not set (vLLM needs an environment "
                  f"of its own: {INSTALL})")
