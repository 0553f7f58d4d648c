# Config validation, the run's dimensions (tasks, runs, epochs, seeds), wildcard constraints,
# and the helpers every rule uses (library files, scripts, resources). Paths and targets are
# in paths.smk, input functions in inputs.smk.
import json
import os
import re
import sys
import time
from argparse import Namespace
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)
from ordermerge import runlock, warm
from ordermerge.config import (MULTITASK_EVAL_PREFIX, TABLE2_TASKS, ConfigError,
                               check as check_config, model_specs, stage_of)
from ordermerge.merge import (get as merge_method, id_pattern, parse_method_id,
                              seeded_row_pattern, sources_of)
from ordermerge.merge.methods import expand as expand_methods

SCHEMA = Path(workflow.basedir) / "config" / "schema.yaml"
try:
    check_config(config, yaml.safe_load(SCHEMA.read_text()), lambda c: validate(c, str(SCHEMA)))
except ConfigError as e:
    raise WorkflowError(str(e)) from None

from ordermerge.data.tasks import TASKS as REGISTRY

MODEL = config["model"]["name"]
ENCODER = config["encoder"]["name"]
# every model: the primary decoder and encoder, and models.decoders / models.encoders (Table 2)
MODELS = model_specs(config)
DECODERS = [m for m, v in MODELS.items() if v["family"] == "decoder"]
ENCODERS = [m for m, v in MODELS.items() if v["family"] == "encoder"]
TASKS = list(config["tasks"])
DECODER_TASKS = [t for t in TASKS if REGISTRY[t].family == "decoder"]
ENCODER_TASKS = [t for t in TASKS if REGISTRY[t].family == "encoder"]
SCHEMES = config["order_schemes"]
# Table 4: tasks also run under fix-batch orders, compared with their shuffled runs
TABLE4 = config["table4"] or {"tasks": [], "methods": []}
TABLE4_TASKS = TABLE4["tasks"]
ALL_SCHEMES = list(dict.fromkeys(SCHEMES + (["shuffle", "fix-batch"] if TABLE4_TASKS else [])))
RUNS = list(range(config["num_sub_models"]))
EPOCHS = list(range(1, config["epochs"] + 1))
MERGE_EPOCHS = config["merge"]["epochs"] or EPOCHS
REPORT_EPOCH = config["report"]["epoch"] or EPOCHS[-1]
SEEDS = config["merge"]["seeds"]
LIB = Path(workflow.basedir) / "ordermerge"
SCRIPTS = Path(workflow.basedir) / "scripts"


wildcard_constraints:
    model=r"[A-Za-z0-9._-]+",
    task=r"[a-z0-9_]+",
    scheme="|".join(ALL_SCHEMES),
    run=r"\d+",
    epoch=r"\d+",
    kind="sft|merged",
    split="train|validation|test",


# what a task's rows, prompts, targets and gold answers depend on
TASK_SOURCES = ("data/registry.py", "data/task.py", "data/tasks.py", "data/sources.py", "data/toy.py",
                "data/toy_tasks.py", "data/math_latex.py", "hparams.py")


def lib(*modules):
    """Library source files a rule's results depend on (Snakemake does not track imports).

    Relative to the working directory, so that moving the project does not change every
    rule's set of inputs (which would rerun everything)."""
    return [os.path.relpath(LIB / m) for m in modules]


# how every rule runs its script: through the warm worker's client, which is plain `python
# SCRIPT` wherever no warm worker serves this run (ordermerge/warm.py). By its path, as the
# scripts are, so that the project need not be installed (`-m` would need it importable)
PY = f"python {os.path.relpath(LIB / 'warm.py')}"


def script(name):
    return os.path.relpath(SCRIPTS / name)


def res(stage, key):
    """A resource of a stage: the stage's own setting, else the default's."""
    r = config["resources"]
    return r[stage].get(key, r["default"].get(key))


def resources_of(stage):
    """Snakemake / SLURM resources of a stage, from config: sbatch's --mem, --time,
    --cpus-per-task, --gpus, --partition, --account and extra arguments."""
    out = {"mem_mb": res(stage, "mem_mb"), "runtime": res(stage, "runtime"),
           "cpus_per_task": res(stage, "cpus")}
    if res(stage, "gpus"):
        out["gpu"] = res(stage, "gpus")
    for key in ("slurm_partition", "slurm_account", "slurm_extra"):
        if res(stage, key):
            out[key] = res(stage, key)
    return out


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def model_of(task):
    """The {model} of a task's paths: the decoder's name, or the encoder's for encoder tasks."""
    return ENCODER if REGISTRY[task].family == "encoder" else MODEL
