# Config validation and the plan: every rule calls `P`, an ordermerge.workflow.plan.Plan of this
# config (the run's dimensions, paths, targets, input functions, params, code inputs and
# resources, tested without Snakemake in tests/test_plan.py; its check runs the memory
# preflight). Only what is Snakemake's own (directory, temp, report, unpack, wildcard
# constraints) is written here and in the rules.
import os
import sys
import time
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)
from ordermerge import warm
from ordermerge.workflow import runlock
from ordermerge.workflow.config import PLAN_ONLY, ConfigError, check as check_config, environment_errors
from ordermerge.merge.methods import id_pattern
from ordermerge.workflow.plan import SPLITS, Plan, PlanError, as_json, one_of, stage_of
from ordermerge.workflow.stages import check_rules
from ordermerge.report.registry import get as table_spec
from ordermerge.schema import SCHEMA_FILE, schema

try:
    check_config(config, schema(), lambda c: validate(c, str(SCHEMA_FILE)))
    if not os.environ.get(PLAN_ONLY):  # what this machine lacks, before any job removes anything
        _lacking = environment_errors(config)
        if _lacking:
            raise ConfigError("this machine cannot run the config:\n  " + "\n  ".join(_lacking))
    P = Plan(config).check()
except (ConfigError, PlanError) as e:
    raise WorkflowError(str(e)) from None

PY = P.py
# how SFT jobs report (sft.trackers, sft.progress_s): in their environment, not their params,
# so that changing it reruns nothing (a job re-reads this file under SLURM too)
from ordermerge.progress import MONITOR_ENV
os.environ[MONITOR_ENV] = P.sft_monitor()


wildcard_constraints:
    model=r"[A-Za-z0-9._-]+",
    task=r"[a-z0-9_]+",
    scheme="|".join(P.all_schemes),
    run=r"\d+",
    epoch=r"\d+",
    kind="sft|merged",
    split="|".join(SPLITS),
