"""HumanEval: a completion is the function body after the prompt; it passes when the
problem's tests run without error in the sandbox. pass@k by the unbiased estimator of Chen
et al. (2021): 1 - C(n-c, k) / C(n, k) over n samples with c correct."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .sandbox import Limits, run_python

# top-level constructs that end a generated function (the human-eval paper's stop set)
STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


def program(problem: dict, completion: str) -> str:
    return (f"{problem['prompt']}{completion}\n\n{problem['test']}\n\n"
            f"check({problem['entry_point']})\n")


def check(problems: list[dict], completions: list[str], *, limits: Limits = Limits(),
          workers: int = 2) -> list[dict]:
    """Each completion run against its problem's tests in the sandbox, in parallel."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda pc: run_python(program(*pc), limits),
                                zip(problems, completions)))
    return [{"passed": r.passed, "status": r.status, "returncode": r.returncode,
             "wall_s": round(r.wall_s, 3), "stderr_tail": r.stderr_tail[-500:]} for r in results]


def pass_at_k(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
