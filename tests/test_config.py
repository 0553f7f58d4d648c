"""Config validation: wrong keys and types fail before any job runs, naming the key path."""
import copy
import re
from pathlib import Path

import pytest
import yaml

from ordermerge.workflow.config import ConfigError, check, deep_merge
from ordermerge.utils import InputError
from workflow_helpers import ROOT, copy_project, plain, planned_jobs, rule_outputs, snakemake

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


def test_the_schema_reads_the_same_with_either_yaml_loader():
    """ordermerge.schema loads config/schema.yaml with libyaml's loader where PyYAML has it:
    the same data as the pure-Python safe loader's."""
    from ordermerge.schema import SCHEMA_FILE, schema
    assert schema() == yaml.load(SCHEMA_FILE.read_text(), Loader=yaml.SafeLoader)
    assert schema()["$defs"]["train"]["properties"]["lr"]["default"] == 2.0e-5


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
    ({"encoder__name": "tiny-llama"}, "config key encoder.name: the encoder needs a name of its own"),
    ({"tasks__math__evaluate__choice_scoring": "vote"}, "config key tasks.math.evaluate.choice_scoring"),
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


def test_what_this_machine_lacks_fails_the_config_check_before_any_job(project, tmp_path):
    """`evaluate: {backend: vllm}` without a vLLM Python, or a local data copy that is not
    there, passed the dry run; the real run then removed the evaluation records (or
    results/data) whose params had changed before their jobs failed. Now both are config
    errors, named by key, before any job; `ordermerge plan`'s dry run (a plan for another
    machine) skips them."""
    layer = tmp_path / "vllm.yaml"
    layer.write_text("evaluate: {backend: vllm}\nmerge: {ensemble: false}\ntasks:\n  gsm8k:\n    data: {source: hf, "
                     f"path: {tmp_path / 'no-gsm8k'}}}\n")
    missing = str(tmp_path / "no-python")
    kept = project / "results" / "eval" / "mine.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("earlier")
    proc = snakemake(project, "--configfile", "config.yaml", "reduced.yaml", str(layer),
                     check=False, env={"ORDERMERGE_VLLM_PYTHON": missing})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "this machine cannot run the config:" in out
    assert (f"config key evaluate.backend: vllm generates gsm8k, but "
            f"$ORDERMERGE_VLLM_PYTHON = {missing!r} is not an executable file") in out, out[-2000:]
    assert (f"config key tasks.gsm8k.data.path: {tmp_path / 'no-gsm8k'}: no such file or "
            "directory") in out
    assert kept.read_text() == "earlier"
    assert sorted(p.name for p in (project / "results").iterdir()) == ["eval"]
    # the plan's dry run checks the config only
    plan = snakemake(project, "-n", "--configfile", "config.yaml", "reduced.yaml", str(layer),
                     check=False, env={"ORDERMERGE_VLLM_PYTHON": missing,
                                       "ORDERMERGE_PLAN_ONLY": "1"})
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-2000:]
    kept.unlink()
    kept.parent.rmdir()
    (project / "results").rmdir()


def test_a_malformed_local_data_copy_fails_the_config_check_once_read(tmp_path, monkeypatch):
    """A local copy with a line that is not JSON passed the config check; the prepare_data
    job then failed after Snakemake had removed results/data/<task>. It is read as the job
    will read it, before any job; a clean copy is read once per version (size, mtime)."""
    from ordermerge.workflow.config import local_data_error
    src = tmp_path / "gsm8k"
    src.mkdir()
    good = '{"question": "q", "answer": "a\\n#### 1"}\n'
    (src / "train.jsonl").write_text(good * 3 + "{bad\n")
    (src / "test.jsonl").write_text(good)
    data = {"source": "hf", "path": str(src), "test_path": None, "revision": None,
            "n_train": None, "n_validation": 1, "n_test": None}
    cache = tmp_path / "checks.json"
    assert local_data_error("gsm8k", data, 0, cache) == (
        f"{src / 'train.jsonl'}:4: not valid JSON (Expecting property name enclosed in double "
        "quotes at column 2)")
    assert not cache.exists()  # only a clean read is remembered
    (src / "train.jsonl").write_text(good * 3)
    assert local_data_error("gsm8k", data, 0, cache) is None and cache.is_file()
    import ordermerge.data.prepare as prep

    def fail(*a, **k):
        raise ValueError("read again")
    monkeypatch.setattr(prep, "prepare", fail)
    assert local_data_error("gsm8k", data, 0, cache) is None  # remembered: not read again
    assert local_data_error("gsm8k", {**data, "n_validation": 2}, 0, cache) == "read again"
    (src / "test.jsonl").write_text(good * 2)  # another version of a file: read again
    assert local_data_error("gsm8k", data, 0, cache) == "read again"


def test_config_overrides_change_the_plan(project):
    jobs = planned_jobs(project, "--configfile", "config.yaml", "reduced.yaml", "--config", "num_sub_models=3")
    # two tasks (gsm8k, sst2), gsm8k under fix-batch orders too (Table 4), the second
    # decoder on sst2 (Table 2) and the LoRA runs on gsm8k (Table 1L; the orders are the task's)
    assert len(jobs["sft"]) == 5 * 3 and len(jobs["order"]) == 3 * 3
    # 2 tasks x 2 epochs x (3 sub-models + avg + 2 select + 2 resample + model stock +
    # fisher + regmean + greedy soup + ties), and Table 4's fix-batch runs and resample merges at the
    # report epoch, and Table 2's second decoder (3 runs, 2 selection seeds): the K runs in
    # one job, a method's 2 seeds in one job
    runs, seeds, single = jobs["evaluate_runs"], jobs["evaluate_seeds"], jobs["evaluate"]
    # Table 1L: the LoRA runs on gsm8k at the report epoch, their avg, select and resample
    assert len(runs) == 2 * 2 + 1 + 1 + 1 and all(p.endswith("/sft/run0.json") for p in runs)
    assert len(seeds) == 2 * 2 * 2 + 1 + 1 + 2 and all(p.endswith("-s0.json") for p in seeds)
    assert len(single) == 2 * 2 * 6 + 1 and all("/merged/" in p for p in single)
    assert 3 * len(runs) + 2 * len(seeds) + len(single) == \
        2 * 2 * (3 + 1 + 2 + 2 + 5) + 3 + 2 + 3 + 2 + (3 + 1 + 2 + 2)
    # the ensemble of the 3 runs of each task at the report epoch (Table 1's last row), and
    # RegMean's Grams: each run's per task and epoch
    assert len(jobs["evaluate_ensemble"]) == 2 and all(p.endswith("/ensemble/runs.json") for p in jobs["evaluate_ensemble"])
    assert len(jobs["input_gram"]) == 2 * 2 * 3
    # Fisher merging's data: each run's Fisher per task and epoch; greedy soup's: the runs'
    # validation records, K per job
    assert len(jobs["diagonal_fisher"]) == 2 * 2 * 3 and len(jobs["merge_soup"]) == 2 * 2
    assert len(jobs["validate_runs"]) == 2 * 2
    # the group: 3 merges, each evaluated on both tasks in one job
    assert len(jobs["multitask_merge"]) == 3 and len(jobs["evaluate_multitask_pair"]) == 3
    assert all(p.startswith("results/eval/multitask/pair/gsm8k/") for p in jobs["evaluate_multitask_pair"])
    # the figures: the 3 runs and 2 merges scored on the training rows; 3 curves
    assert len(jobs["score"]) == 3 + 2 and len(jobs["curve"]) == 3
    assert len(planned_jobs(project, "--configfile", "config.yaml", "reduced.yaml")["sft"]) == 5 * 2


def test_slurm_profile_dry_run(project):
    """The profile plans the SLURM resources of each stage from config: GPUs, partition and
    account, a stage over `default`; the orders go to SLURM as one group job."""
    (project / "cluster.yaml").write_text(
        "resources:\n"
        "  default: {slurm_account: lab, slurm_partition: cpu}\n"
        "  sft: {gpus: 2, slurm_partition: gpu, mem_mb: 64000, runtime: 600, cpus: 8}\n")
    proc = snakemake(project, "-n", "--profile", "slurm", "--configfile", "config.yaml",
                     "reduced.yaml", "cluster.yaml")
    out = proc.stdout + proc.stderr
    res = {}
    for m in re.finditer(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out, re.M):
        res.setdefault(m.group(1), dict(kv.split("=", 1) for kv in m.group(2).split(", ")))
    assert {k: res["sft"][k] for k in ("gpu", "slurm_partition", "slurm_account", "mem_mb",
                                        "runtime", "cpus_per_task")} == \
        {"gpu": "2", "slurm_partition": "gpu", "slurm_account": "lab", "mem_mb": "64000",
         "runtime": "600", "cpus_per_task": "8"}
    assert "gpu" not in res["merge"] and res["merge"]["slurm_partition"] == "cpu"
    assert res["merge"]["slurm_account"] == "lab"
    assert "Group job orders" in out


def _extended(base: dict, extra: dict) -> dict:
    """config.yaml extended by a --configfile, as Snakemake merges them (nested update);
    a deep copy, as the check fills defaults in place."""
    return deep_merge(copy.deepcopy(base), copy.deepcopy(extra))


def test_paper_config_takes_the_papers_hyperparameters():
    from ordermerge.data.tasks import TASKS
    from ordermerge.hparams import EPOCHS, LLAMA_7B_MICRO_BATCH
    paper = _extended(DEFAULT, yaml.safe_load((ROOT / "config/paper.yaml").read_text()))
    check(paper, SCHEMA, fill_defaults)
    for name, task in paper["tasks"].items():  # every row of the real datasets
        assert task["data"]["source"] == "hf" and task["data"]["n_train"] is None, name
    assert paper["epochs"] == EPOCHS
    for name, task in paper["tasks"].items():
        want = TASKS[name].hparams  # the entry's: Llama-2-7b's row, or BERT's for encoder tasks
        tr = task["train"]
        assert {k: tr[k] for k in ("max_length", "lr", "batch_size")} == \
            {k: want[k] for k in ("max_length", "lr", "batch_size")}, name
        assert task["resample_rounds"] == want.get("resample_rounds", 1), name
        assert tr["mixed_precision"] == "bf16", name
        if TASKS[name].family == "decoder":
            assert tr["micro_batch_size"] == LLAMA_7B_MICRO_BATCH[tr["max_length"]], name
            # the length-aware cut within the plain cut's padded-token bound
            assert tr["micro_batch_tokens"] == tr["micro_batch_size"] * tr["max_length"], name
            assert tr["gradient_checkpointing"], name
    # Table 2: BERT-base and -large, TinyLlama and Llama-2-7b
    from ordermerge.workflow.config import model_specs
    specs = model_specs(paper)
    assert {m: v["family"] for m, v in specs.items()} == {
        "llama-2-7b": "decoder", "tinyllama-1.1b": "decoder", "bert-base": "encoder", "bert-large": "encoder"}
    assert specs["tinyllama-1.1b"]["tasks"] == ["sst2", "mnli", "squad"]
    assert specs["bert-large"]["tasks"] == ["glue_sst2", "glue_mnli", "squad_v1"]
    assert specs["bert-large"]["spec"]["source"] == "google-bert/bert-large-uncased"
    assert (ROOT / paper["sft"]["accelerate_config"]).is_file()


@pytest.mark.parametrize("name,kind,processes", [("1gpu", "NO", 1), ("ddp-4gpu", "MULTI_GPU", 4),
                                                 ("ddp-8gpu", "MULTI_GPU", 8),
                                                 ("fsdp-7b-8gpu", "FSDP", 8)])
def test_shipped_accelerate_configs_load(name, kind, processes):
    from accelerate.commands.config.config_args import load_config_from_file
    cfg = load_config_from_file(str(ROOT / "config/accelerate" / f"{name}.yaml"))
    assert str(cfg.distributed_type).split(".")[-1] == kind and cfg.num_processes == processes
    assert cfg.mixed_precision == "bf16"
    if kind == "FSDP":
        assert cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"


def test_code_execution_is_opt_in():
    with pytest.raises(ConfigError, match=r"config key tasks.code.evaluate.allow_code_execution: "
                                          r"task 'code' is scored by running the model's "
                                          r"completions as Python \(humaneval\)"):
        check_with(tasks__code={})
    check_with(tasks__code={"evaluate": {"allow_code_execution": True}})
    for name in ("config/paper.yaml", "config/tiny-all.yaml", "tests/data/reduced-all.yaml"):
        shipped = yaml.safe_load((ROOT / name).read_text())
        assert shipped["tasks"]["code"]["evaluate"]["allow_code_execution"] is True, name


def test_the_evaluate_rule_refuses_code_without_the_opt_in(tmp_path):
    from ordermerge.data.registry import get_task
    from ordermerge.evaluate.run import evaluate_model
    with pytest.raises(InputError, match="set tasks.code.evaluate.allow_code_execution: true"):
        evaluate_model(get_task("code"), tmp_path, [], {"batch_size": 1, "kind": "sft",
                                                        "name": "run0"})


def test_sft_launcher_settings_are_checked(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match="config key sft.accelerate_config: no file 'nope.yaml'"):
        check_with(sft={"accelerate_config": "nope.yaml"})
    with pytest.raises(ConfigError, match="config key sft.num_processes: 2 processes need"):
        check_with(sft={"num_processes": 2})


def test_accelerate_launch_and_temporary_checkpoints_in_the_plan(tmp_path):
    """With an accelerate config the SFT jobs go through accelerate launch; with
    temporary_checkpoints their checkpoint directories are temp()."""
    wd = copy_project(tmp_path / "p")
    (wd / "launch.yaml").write_text("sft: {accelerate_config: config/accelerate/ddp-4gpu.yaml, "
                                    "num_processes: 4, temporary_checkpoints: true}\n")
    proc = snakemake(wd, "-n", "-p", "--configfile", "config.yaml", "reduced.yaml", "launch.yaml")
    out = proc.stdout + proc.stderr
    assert out.count("accelerate launch --config_file config/accelerate/ddp-4gpu.yaml "
                     "--num_processes 4 scripts/sft.py") == 2 * 5  # K runs x (2 tasks + fix-batch gsm8k + xs sst2 + LoRA gsm8k)
    temp = {Path(f).name: t for f, t in rule_outputs(wd, "sft", "config.yaml", "reduced.yaml",
                                                     "launch.yaml")}
    assert temp["epoch1"] and temp["epoch2"] and temp["steps"] and not temp["samples.csv"]
    plain = {Path(f).name: t for f, t in rule_outputs(wd, "sft", "config.yaml", "reduced.yaml")}
    assert not any(plain.values())
    assert "accelerate launch" not in snakemake(wd, "-n", "-p", "--configfile", "config.yaml",
                                                "reduced.yaml").stdout


def test_more_models_are_checked_as_model_blocks():
    from ordermerge.workflow.config import model_specs
    cfg = check_with(models={"decoders": [{"name": "small", "tiny": {"hidden_size": 32}, "tasks": ["sst2"]}],
                             "encoders": [{"name": "bert-l", "tiny": {"num_hidden_layers": 4}}]})
    specs = model_specs(cfg)
    assert specs["small"]["spec"]["tiny"]["hidden_size"] == 32
    assert specs["small"]["spec"]["tiny"]["num_hidden_layers"] == cfg["model"]["tiny"]["num_hidden_layers"]
    assert specs["small"]["tasks"] == ["sst2"] and specs["tiny-llama"]["tasks"] == ["gsm8k", "sst2", "agnews"]
    assert specs["bert-l"]["tasks"] == ["glue_sst2"] and specs["bert-l"]["family"] == "encoder"
    with pytest.raises(ConfigError, match=r"config key models.decoders\[0\].tiny.hiden_size: unknown key"):
        check_with(models={"decoders": [{"name": "s", "tiny": {"hiden_size": 32}}]})
    with pytest.raises(ConfigError, match=r"models.decoders\[0\].name: 'tiny-bert' is taken"):
        check_with(models={"decoders": [{"name": "tiny-bert"}]})
    with pytest.raises(ConfigError, match=r"models.encoders\[0\].tasks: 'sst2' is a decoder task"):
        check_with(models={"encoders": [{"name": "b", "tasks": ["sst2"]}]})
    with pytest.raises(ConfigError, match=r"table2.tasks: 'mnli' is not configured"):
        check_with(table2={"tasks": ["mnli"]})


def test_analysis_sections_can_be_turned_off():
    cfg = check_with(figures=None, table4=None, table2=None)
    assert cfg["figures"] is None and cfg["table4"] is None and cfg["table2"] is None
    assert check_with()["figures"]["segments"] == 5  # the defaults fill in when present


def test_a_batched_job_writes_the_outputs_of_all_its_models(project, tmp_path):
    """evaluate_runs writes the K runs' records, evaluate_seeds every merge seed's, the
    group rule every task's, merge_seeds every seed's merge (the job counts in the plan
    tests rest on these)."""
    (project / "k3.yaml").write_text("num_sub_models: 3\n")
    ev = "results/eval/{model}/{task}/{scheme}/epoch{epoch}"

    def records(rule):
        return [plain(p) for p, _ in rule_outputs(project, rule, "config.yaml", "reduced.yaml", "k3.yaml")
                if not p.endswith(".prov.json")]
    assert records("evaluate_runs") == [f"{ev}/sft/run{r}.json" for r in range(3)]
    assert records("evaluate_seeds") == [f"{ev}/merged/{{method}}-s{s}.json" for s in (0, 1)]
    assert records("evaluate") == [f"{ev}/merged/{{name}}.json"]
    merged = "results/merged/{model}/{task}/{scheme}/epoch{epoch}"
    assert records("merge_seeds") == [f"{merged}/{{method}}-s{s}" for s in (0, 1)]
    assert records("evaluate_multitask_pair") == [f"results/eval/multitask/pair/{t}/{{name}}.json"
                                                  for t in ("gsm8k", "sst2")]


def test_filling_defaults_leaves_the_cached_schema_alone():
    """fill_defaults put the schema's default objects into the config by reference and then
    filled them in: the process's cached schema changed with the first config (its defaults
    gained keys), and a test of the schema then failed after any test that loaded a config."""
    import json

    from ordermerge.schema import fill_defaults, schema
    before = json.dumps(schema(), sort_keys=True)
    first: dict = {"tasks": {"gsm8k": {}}}
    fill_defaults(first, schema())
    first["report"]["epoch"] = 99  # a config's own object, not the schema's
    second: dict = {"tasks": {"gsm8k": {}}}
    fill_defaults(second, schema())
    assert json.dumps(schema(), sort_keys=True) == before
    assert second["report"]["epoch"] != 99 and first["report"] is not second["report"]
