"""The merge kernels compiled once per test session, their on-disk cache shared by every
project copy.

The fused merge kernels (ordermerge/merge/fused.py, fused_tv.py) are numba functions with
`cache=True`: the first process that calls one compiles it (4-7 CPU-s a kernel and dtype,
about 20 CPU-s for a checkpoint's worth of methods) and writes it to `__pycache__` beside the
source, where every later process loads it in well under a second. A project copy
(workflow_helpers.copy_project) has its own source files, so its jobs found no cache and
compiled again, several merge jobs of one run at once: about 110 CPU-s of the suite
(SmolLM2's nine merges 62 CPU-s, 42 with the cache; the reduced run's thirty 44, 13;
bench/RESULTS.md, issue 36).

`compile_kernels` runs each fused method once per dtype the workflows use, in this checkout
(two processes at once), so the cache holds every kernel signature;
`workflow_helpers.copy_kernel_cache` copies it into a project copy. Numba keys a cache entry
by the source file's modification time and size, which the copy keeps (shutil.copy2), and by
the CPU, which is this one: the copy's jobs load exactly what they would have compiled. A
copy whose source a test edits compiles that file's kernels itself, as before.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from workflow_helpers import ROOT

# every method the engine runs through a numba kernel (Fisher merging and greedy soup average
# with torch), at their default settings
FUSED = ("average", "select", "resample", "model_stock", "task_arithmetic", "ties", "ties_select",
         "dare_linear", "dare_ties", "dare_resample")

_COMPILE = r"""
import json, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from ordermerge.merge import engine
out, dtype, methods = Path(sys.argv[1]), getattr(torch, sys.argv[2]), json.loads(sys.argv[3])
g = torch.Generator().manual_seed(0)
dirs = []
for i in range(3):
    d = out / f"m{i}"
    d.mkdir(parents=True)
    save_file({"w": torch.randn(64, 96, generator=g).to(dtype)}, d / "model.safetensors")
    (d / "config.json").write_text("{}")
    dirs.append(d)
for name in methods:
    engine.merge(name, dirs[1:], out / f"merged-{name}", base=dirs[0])
"""
DTYPES = ("bfloat16", "float32")


def compile_kernels(out: Path) -> None:
    """Every fused method once per dtype in DTYPES (tiny checkpoints under `out`), in this
    checkout's Python processes: the kernels land in ordermerge's __pycache__."""
    out.mkdir(parents=True)
    procs = [subprocess.Popen([sys.executable, "-c", _COMPILE, str(out / dt), dt, json.dumps(FUSED)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for dt in DTYPES]
    for dt, p in zip(DTYPES, procs):
        text, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"compiling the merge kernels ({dt}) failed:\n{text[-3000:]}"
