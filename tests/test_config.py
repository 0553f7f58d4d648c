"""Config validation: wrong keys and types fail before any job runs, naming the key path."""
import copy
from pathlib import Path

import pytest
import yaml

from ordermerge.config import ConfigError, check
from workflow_helpers import ROOT, copy_project, planned_jobs, snakemake

SCHEMA = yaml.safe_load((ROOT / "config/schema.yaml").read_text())
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def fill_defaults(config):
    from snakemake.utils import validate
    validate(config, str(ROOT / "config/schema.yaml"))


def check_with(**changes):
    cfg = copy.deepcopy(DEFAULT)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    check(cfg, SCHEMA, fill_defaults)
    return cfg


def test_default_and_paper_configs_are_valid():
    cfg = check_with()
    assert cfg["tasks"]["gsm8k"]["train"]["weight_decay"] == 0.0  # default filled in
    assert cfg["resources"]["default"]["cpus"] == 1
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    check(paper, SCHEMA, fill_defaults)
    assert paper["num_sub_models"] == 20 and paper["merge"]["seeds"] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("changes,message", [
    ({"Kk": 2}, "config key Kk: unknown key"),
    ({"num_sub_models": "two"}, "config key num_sub_models: 'two' is not of type 'integer'"),
    ({"tasks__gsm8k__train__lrr": 1.0}, "config key tasks.gsm8k.train.lrr: unknown key"),
    ({"tasks__gsm8k__train__lr": -1}, "config key tasks.gsm8k.train.lr"),
    ({"tasks__gsm8k__data__source": "web"}, "config key tasks.gsm8k.data.source"),
    ({"order_schemes": ["random"]}, "config key order_schemes.0"),
    ({"merge__seeds": []}, "config key merge.seeds"),
    ({"tasks__nosuchtask": {}}, "config key tasks.nosuchtask: unknown task"),
    ({"merge__weights": [0.5, 0.5]}, "config key merge.weights: 2 values for num_sub_models = 4"),
    ({"tasks__gsm8k__train__micro_batch_size": 64}, "micro_batch_size: 64 exceeds batch_size"),
    ({"report__epoch": 9}, "config key report.epoch: 9 > epochs"),
    ({"num_sub_models": 1}, "config key num_sub_models: 1"),
])
def test_bad_config_names_the_key(changes, message):
    with pytest.raises(ConfigError) as e:
        check_with(**changes)
    assert message in str(e.value)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("cfg") / "project")


def test_snakemake_rejects_a_bad_key_before_any_job(project):
    proc = snakemake(project, "-n", "--configfile", "config.yaml", "reduced.yaml",
                     "--config", "Kk=2", check=False)
    assert proc.returncode != 0
    assert "config key Kk: unknown key" in proc.stdout + proc.stderr
    assert not (project / "results").exists()


def test_config_overrides_change_the_plan(project):
    jobs = planned_jobs(project, "--configfile", "config.yaml", "reduced.yaml", "--config", "num_sub_models=3")
    assert len(jobs["sft"]) == 3 and len(jobs["order"]) == 3
    # 2 epochs x (3 sub-models + avg + 2 select + 2 resample)
    assert len(jobs["evaluate"]) == 2 * (3 + 1 + 2 + 2)
    assert len(planned_jobs(project, "--configfile", "config.yaml", "reduced.yaml")["sft"]) == 2


def test_slurm_profile_dry_run(project):
    proc = snakemake(project, "-n", "--profile", "slurm", "--configfile", "config.yaml",
                     "reduced.yaml")
    assert "sft" in proc.stdout + proc.stderr
