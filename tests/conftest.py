import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workflow_helpers import REDUCED_ARGS, copy_project, snakemake  # noqa: E402


@pytest.fixture(scope="session")
def reduced_run(tmp_path_factory) -> Path:
    """The reduced tiny suite (tests/data/reduced.yaml) run once per test session in a copy
    of the project, shared by every module that reads a finished run (test_workflow.py, the
    SLURM module's local reference and its kill-and-resume test). Tests that change files
    work on a copy (`shutil.copytree(..., symlinks=True)`), or restore what they changed and
    mark the outputs current again."""
    wd = copy_project(tmp_path_factory.mktemp("reduced") / "project")
    snakemake(wd, *REDUCED_ARGS)
    return wd


# the longest modules first (measured, slowest first), so that with `pytest -n 3 --dist
# loadfile` (the README's command) each worker starts on one and the short ones fill in
# around them; without xdist the order changes nothing else
LONGEST_FIRST = ("test_slurm.py", "test_slurm_limits.py", "test_smollm2.py", "test_workflow_tasks.py",
                 "test_workflow.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
