import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that wait for work sleep instead of spinning. The suite runs 4 xdist workers
# and their subprocesses on the machine's cores, each with its own OpenMP pool: spinning
# threads took cores from the others (clean clones on the 2-core CI VM: pytest 960 s and
# .ci/run 30.5 CPU-minutes spinning, 847 s and 26.5 sleeping; bench/RESULTS.md, issue 36). Set before
# torch loads, inherited by every subprocess; results are the same, only waits change.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels import compile_kernels  # noqa: E402
from workflow_helpers import REDUCED_ARGS, copy_project, made_once, snakemake  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def merge_kernels(tmp_path_factory):
    """The numba merge kernels compiled into this checkout's cache before any test, once per
    session (tests/kernels.py): the tests and every project copy load them."""
    made_once(tmp_path_factory, "merge-kernels", compile_kernels)


@pytest.fixture(autouse=True)
def fused_kernels_at_any_size(monkeypatch):
    """The tests' checkpoints are small: merge them with the fused kernels as large ones are
    (merge/engine.py FUSED_MIN_ELEMENTS sends merges this small to the torch path; the
    workflow's jobs, other processes, keep it)."""
    from ordermerge.merge import engine
    monkeypatch.setattr(engine, "FUSED_MIN_ELEMENTS", 0)


@pytest.fixture(scope="session")
def reduced_run(tmp_path_factory) -> Path:
    """The reduced tiny suite (tests/data/reduced.yaml) run once per test session in a copy
    of the project, shared by every module that reads a finished run (test_workflow.py, the
    SLURM module's local reference and its kill-and-resume test). Tests that change files
    work on a copy (`shutil.copytree(..., symlinks=True)`), or restore what they changed and
    mark the outputs current again."""
    from ordermerge.runner import TRACE_ENV
    wd = copy_project(tmp_path_factory.mktemp("reduced") / "project")
    # every job's log ends with the package files it imported (test_workflow checks them
    # against the code inputs its rule declares)
    snakemake(wd, *REDUCED_ARGS, env={TRACE_ENV: "1"})
    return wd


# the longest modules first (measured, slowest first), so that with `pytest -n 4 --dist
# loadfile` (the README's command) the SLURM modules' waits on the scheduler and the SmolLM2
# run start at once and the short modules fill the cores around them. pytest-xdist's
# loadfile scheduler hands out files by their number of tests, most first (which put these
# three last, where their minutes of waiting were the suite's tail), so its queue is
# reordered before the first file is handed out (`pytest_xdist_make_scheduler` is xdist's
# hook for this; sorting the items, as this file did before, does not reach it); without
# xdist the order changes nothing
LONGEST_FIRST = ("tests/test_slurm.py", "tests/test_vllm.py", "tests/test_slurm_limits.py",
                 "tests/test_smollm2.py", "tests/test_workflow.py", "tests/test_bench.py",
                 "tests/test_fsdp_cpu.py", "tests/test_workflow_tasks.py", "tests/test_general.py",
                 "tests/test_sft.py",
                 "tests/test_overwrite.py", "tests/test_config.py")


def _rank(path: str) -> int:
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        """loadfile, with the files of LONGEST_FIRST handed out first."""
        _ordered = False

        def _assign_work_unit(self, node):
            if not self._ordered:
                self._ordered = True
                for scope in sorted(self.workqueue, key=lambda s: _rank(s.split("::")[0])):
                    self.workqueue.move_to_end(scope)  # a stable sort: xdist's order otherwise
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


# ORDERMERGE_TEST_TIMELINE=FILE: one line per test phase (worker, start or end, wall clock,
# CPU seconds of the worker and its finished children so far, id), to see how the xdist
# workers' files fall on the cores and what each test costs in CPU (bench/RESULTS.md reads it)
_TIMELINE = os.environ.get("ORDERMERGE_TEST_TIMELINE")


def pytest_configure(config):
    global _TIMELINE
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        _TIMELINE = None  # the xdist controller: its workers write the lines, not it


def _mark(what: str, nodeid: str) -> None:
    import resource
    import time
    cpu = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                               resource.getrusage(resource.RUSAGE_CHILDREN)))
    with open(_TIMELINE, "a") as f:
        f.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}\t{what}\t{time.time():.1f}\t"
                f"{cpu:.1f}\t{nodeid}\n")


def pytest_runtest_logstart(nodeid, location):
    if _TIMELINE:
        _mark("start", nodeid)


def pytest_runtest_logfinish(nodeid, location):
    if _TIMELINE:
        _mark("end", nodeid)
