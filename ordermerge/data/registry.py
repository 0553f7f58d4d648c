"""The task registry: every task of tasks.py by name, and the names the rest of the code
imports (a task's fields are described in task.py)."""
from __future__ import annotations

from .sources import DatasetUnavailable, Source
from .task import SPLITS, Task, check_rows
from .tasks import TASKS

__all__ = ["DatasetUnavailable", "SPLITS", "Source", "TASKS", "Task", "check_rows", "get_task"]


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(TASKS)}") from None
