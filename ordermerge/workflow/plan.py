"""The workflow's plan: from a checked config, the run's dimensions, every path template,
the targets, each rule's input functions, params, code inputs and resources, as plain Python
that needs no Snakemake (``rules/*.smk`` only declare rules that call a ``Plan``; the tests
build plans of the default and the paper config directly).

``Plan`` is a facade over its parts, one concern each: the dimensions (dims.py), the path
templates and targets (paths.py), the code inputs (code.py), the resources (resources.py),
the memory preflight (preflight.py), and the rules' input functions and params by stage
(rules/). What is Snakemake's own (``directory``, ``temp``, ``report``, ``unpack``) stays in
the rules. Making a plan reads nothing and raises nothing; ``check`` runs what needs the
disk (the preflight) before any job."""
from __future__ import annotations

from ..data.registry import SPLITS  # noqa: F401  (rules/common.smk: the split wildcard)
from .code import Code
from .common import PlanError, as_json, one_of, rel  # noqa: F401  (the rules' helpers)
from .dims import Dimensions
from .paths import Paths
from .preflight import Preflight
from .resources import Resources
from .rules.data import DataRules
from .rules.evaluate import EvaluateRules
from .rules.general import GeneralRules
from .rules.multitask import MultitaskRules
from .rules.report import ReportRules
from .rules.train_merge import TrainMergeRules
from .stages import STAGES, stage_of  # noqa: F401  (the Snakefile's check)


class Plan(Dimensions, Paths, Code, Resources, Preflight, DataRules, TrainMergeRules,
           EvaluateRules, GeneralRules, MultitaskRules, ReportRules):
    """Everything the rules need to know of one config (already checked and defaulted)."""

    def __init__(self, config: dict):
        Dimensions.__init__(self, config)
        self._table_records: dict[str, list] = {}

    def check(self) -> "Plan":
        """What can be checked of the plan before any job: one local AlpacaEval judge per
        multi-task group, and the memory preflight (PlanError naming every problem)."""
        for group in self.groups:
            self._group_judge(group)
        errors = self.preflight()
        if errors:
            raise PlanError("memory preflight:\n  " + "\n  ".join(errors))
        return self
