"""The workflow's plan: from a checked config, the run's dimensions, every path template,
the targets, and each rule's input functions, params and code inputs, as plain Python that
needs no Snakemake (``rules/*.smk`` only declare rules that call a ``Plan``; the tests build
plans of the default and the paper config directly).

Input functions take Snakemake's ``wildcards`` (anything with the wildcard names as
attributes); paths are strings relative to the working directory, as Snakemake's are. What
is Snakemake's own (``directory``, ``temp``, ``report``, ``unpack``) stays in the rules.

A rule's code inputs are computed (``Plan.code``): the package files its script reaches by
imports (``codedeps.closure``), and for a merge the method's own sources from the merge
registry, so that editing one module reruns exactly the jobs whose results it can change.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .codedeps import ROOT as LIB, closure
from .config import eval_section, generating_backend, model_specs
from .data.task import SPLITS
from .data.tasks import TASKS as REGISTRY
from .memory import GIB, Shape, describe, generation_peak, sft_peak
from .merge.methods import METHODS, expand as expand_methods, get as merge_method, parse_method_id
from .report.registry import TABLES, get as table_spec

# the config stage (resources.<stage>) of each rule that runs as a job: its threads and
# resources come from it (Plan.threads, Plan.resources), a failed job names the setting to
# change by it, and the cost table counts allocated CPUs and GPUs by it. The one place a
# rule's stage is written; the Snakefile checks that every rule is here.
STAGES = {
    "prepare_data": "data", "order": "order",
    "tokenizer": "base", "base": "base", "encoder_base": "base", "encoder_init": "base",
    "sft": "sft",
    "merge": "merge", "merge_seeds": "merge", "multitask_align": "merge", "multitask_merge": "merge",
    "diagonal_fisher": "evaluate", "validate_runs": "evaluate", "merge_soup": "evaluate",
    "evaluate": "evaluate", "evaluate_runs": "evaluate", "evaluate_seeds": "evaluate",
    "evaluate_multitask": "evaluate", "score": "evaluate", "curve": "evaluate",
    "cost": "report", "figure1": "report", "figure3": "report", "figure4": "report",
}
# the per-group rules of rules/multitask.smk (one merge of a group on all its tasks)
MULTITASK_EVAL_PREFIX = "evaluate_multitask_"
# the per-table rules of rules/report.smk, table{N} (report/registry.py)
TABLE_PREFIX = "table"
# benchmark directories that are not a rule's name: results/benchmarks/multitask/ holds the
# multi-task merges (their evaluations are under evaluate/multitask/)
BENCHMARK_STAGES = {**STAGES, "multitask": "merge"}
PROJECT = LIB.parent
# the merge registry: a merge depends on its method's entry (a param), not on this file
REGISTRY_FILE = LIB / "merge" / "methods.py"


class PlanError(ValueError):
    """A config the checks let through but that no workflow can be planned from (named)."""


def stage_of(rule: str) -> str | None:
    """The config resources stage of a workflow rule (None: not one of the workflow's)."""
    if rule.startswith(MULTITASK_EVAL_PREFIX):
        return "evaluate"
    if rule.startswith(TABLE_PREFIX) and rule.removeprefix(TABLE_PREFIX) in TABLES:
        return "report"
    return STAGES.get(rule)


def as_json(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def one_of(names) -> str:
    return "|".join(map(re.escape, names))


def rel(path: str | os.PathLike) -> str:
    """`path` relative to the working directory: moving the project does not change every
    rule's set of inputs (which would rerun everything)."""
    return os.path.relpath(path)


class Plan:
    """Everything the rules need to know of one config (already checked and defaulted)."""

    def __init__(self, config: dict):
        self.config = c = config
        self.model = c["model"]["name"]
        self.encoder = c["encoder"]["name"]
        # every model: the primary decoder and encoder, and models.decoders/encoders (Table 2)
        self.models = model_specs(c)
        self.decoders = [m for m, v in self.models.items() if v["family"] == "decoder"]
        self.encoders = [m for m, v in self.models.items() if v["family"] == "encoder"]
        self.tasks = list(c["tasks"])
        self.decoder_tasks = [t for t in self.tasks if REGISTRY[t].family == "decoder"]
        self.encoder_tasks = [t for t in self.tasks if REGISTRY[t].family == "encoder"]
        self.schemes = c["order_schemes"]
        # Table 4: tasks also run under fix-batch orders, compared with their shuffled runs
        self.table4 = c["table4"] or {"tasks": [], "methods": []}
        self.table4_tasks = self.table4["tasks"]
        self.all_schemes = list(dict.fromkeys(
            self.schemes + (["shuffle", "fix-batch"] if self.table4_tasks else [])))
        self.runs = list(range(c["num_sub_models"]))
        self.epochs = list(range(1, c["epochs"] + 1))
        self.merge_epochs = c["merge"]["epochs"] or self.epochs
        self.report_epoch = c["report"]["epoch"] or self.epochs[-1]
        self.seeds = c["merge"]["seeds"]
        # a group set to null in a layered config file is removed
        self.groups = {n: g for n, g in c["multitask"]["groups"].items() if g is not None}
        for group in self.groups:
            self._group_judge(group)  # one local judge per group, checked before any job
        self._table_records: dict[str, list] = {}
        self.figures = c["figures"] if self.tasks else None
        if self.figures:
            self.fig_task = self.figures["task"] or self.decoder_tasks[0]
            self.fig_model = self.model_of(self.fig_task)
            self.fig_scheme = self.schemes[0]
            self.fig_ids = expand_methods(self.figures["methods"], self.seeds[:1],
                                          rounds=c["tasks"][self.fig_task]["resample_rounds"])
        errors = self.preflight()
        if errors:
            raise PlanError("memory preflight:\n  " + "\n  ".join(errors))

    # ------------------------------------------------------------ the memory preflight
    def model_shape(self, name: str):
        """The sizes of decoder `name` (memory.Shape): the tiny block's, the block's `shape`,
        or a local source's config.json; None when none of these is there."""
        spec = self.models[name]["spec"]
        if spec["source"] == "tiny":
            t = spec["tiny"]
            return Shape(t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"],
                         t["num_attention_heads"], t["num_attention_heads"],
                         spec["tokenizer"]["vocab_size"], t["tie_word_embeddings"])
        if spec.get("shape"):
            return Shape.from_config(spec["shape"])
        cfg = Path(spec["source"]) / "config.json"
        return Shape.from_config(json.loads(cfg.read_text())) if cfg.is_file() else None

    def sharding(self) -> tuple[bool, int]:
        """(fully sharded, processes) of an SFT run, from sft.accelerate_config."""
        s = self.config["sft"]
        if s["accelerate_config"] is None:
            return False, 1
        import yaml

        from .sharding import from_accelerate_config
        acc = yaml.safe_load(Path(s["accelerate_config"]).read_text()) or {}
        return from_accelerate_config(acc) is not None, s["num_processes"]

    def preflight(self) -> list[str]:
        """Every SFT and evaluation job of a decoder whose estimated peak memory
        (ordermerge/memory.py) exceeds its stage's resources.<stage>.gpu_mem_gb, named with
        the estimate's parts. Encoder jobs (BERT sizes) are not estimated."""
        limits = {s: self.res(s, "gpu_mem_gb") for s in ("sft", "evaluate")}
        if all(v is None for v in limits.values()):
            return []
        sharded, processes = self.sharding()
        out = []
        for m in self.decoders:
            shape = self.model_shape(m)
            if shape is None:
                out.append(f"model {m}: no sizes to estimate its memory from (set its `shape`: "
                           f"config.json's hidden_size, intermediate_size, num_hidden_layers, "
                           f"num_attention_heads, num_key_value_heads, vocab_size)")
                continue
            for t in self.models[m]["tasks"]:
                tr, ev = self.config["tasks"][t]["train"], eval_section(self.config, t)
                tokens = tr["micro_batch_tokens"] or tr["micro_batch_size"] * tr["max_length"]
                # vLLM takes its share of the GPU and fills what the weights leave with KV
                # cache: it needs room for one whole sequence; transformers for the batch
                vllm = generating_backend(self.config, t) == "vllm"
                # stage: (estimate, share of the GPU it may take, what to change)
                jobs = {"sft": (sft_peak(shape, micro_batch=1, seq_len=tokens, processes=processes,
                                         sharded=sharded,
                                         gradient_checkpointing=tr["gradient_checkpointing"]),
                                None, "shard it (an FSDP sft.accelerate_config and "
                                "sft.num_processes), or lower train.micro_batch_size / "
                                "micro_batch_tokens"),
                        "evaluate": (generation_peak(shape, batch=1 if vllm else ev["batch_size"],
                                                     prompt_len=tr["max_length"],
                                                     new_tokens=ev.get("max_new_tokens") or 0,
                                                     dtype=self.models[m]["spec"]["dtype"]),
                                     ev["vllm"]["gpu_memory_utilization"] if vllm else None,
                                     "raise evaluate.vllm.gpu_memory_utilization or shorten "
                                     "max_new_tokens" if vllm else "lower evaluate.batch_size")}
                for stage, (est, share, fix) in jobs.items():
                    if limits[stage] is None or est["total"] <= limits[stage] * (share or 1.0) * GIB:
                        continue
                    said = f"resources.{stage}.gpu_mem_gb = {limits[stage]}"
                    if share is not None:
                        said = f"evaluate.vllm.gpu_memory_utilization {share} of {said}"
                    out.append(f"{stage} of {m} on {t} needs about {describe(est)}, over "
                               f"{said}: {fix}")
        return out

    # ------------------------------------------------------------ scripts, code, resources
    @staticmethod
    def script(name: str) -> str:
        return rel(PROJECT / "scripts" / name)

    @staticmethod
    def code(script: str) -> list[str]:
        """The package files the results of `script` (in scripts/) can depend on: its import
        closure within the package."""
        return sorted(rel(f) for f in closure(PROJECT / "scripts" / script))

    def script_inputs(self, script: str) -> dict:
        """A rule's script and its code (inputs: editing either reruns the rule's jobs)."""
        return {"script": self.script(script), "lib": self.code(script)}

    @staticmethod
    def method_files(name: str) -> set[Path]:
        """The files of merge method `name`'s arithmetic: its module (loaded by name), what
        that imports, its helpers; not the registry (see merge_code)."""
        m = merge_method(name)
        return {f for s in m.sources for f in closure(LIB / "merge" / s)} - {REGISTRY_FILE}

    def merge_code(self, mid: str, script: str = "merge.py") -> list[str]:
        """A merge's code: the script's closure and its method's files, so that editing one
        method's source reruns only its merges; not the registry, whose entry for the method
        is a param of the job instead (`method_entry`), so that editing one entry (or adding
        a method) reruns that method's merges only."""
        files = set(closure(PROJECT / "scripts" / script)) - {REGISTRY_FILE}
        return sorted(rel(f) for f in files | self.method_files(parse_method_id(mid)[0]))

    @staticmethod
    def method_entry(wildcards, mid=None) -> str:
        """The registry entry of the merge's method (the {method} wildcard or `mid`), as JSON:
        what the job depends on in ordermerge/merge/methods.py."""
        mid = mid or wildcards.method
        if mid == "single":
            return ""
        return as_json(merge_method(parse_method_id(mid)[0]).entry())

    # how every rule runs its script: through the warm worker's client, which is plain
    # `python SCRIPT` wherever no warm worker serves the run (ordermerge/warm.py); by its
    # path, as the scripts are, so that the project need not be installed
    @property
    def py(self) -> str:
        return f"python {rel(LIB / 'warm.py')}"

    def res(self, stage: str, key: str):
        """A resource of a stage: the stage's own setting, else the default's."""
        r = self.config["resources"]
        return r[stage].get(key, r["default"].get(key))

    def threads(self, rule: str) -> int:
        return self.res(stage_of(rule), "cpus")

    def resources(self, rule: str) -> dict:
        """Snakemake / SLURM resources of a rule, from its stage's config: sbatch's --mem,
        --time, --cpus-per-task, --gpus, --partition, --account and extra arguments."""
        stage = stage_of(rule)
        if stage is None:
            raise PlanError(f"rule {rule!r} has no stage in ordermerge/plan.py STAGES")
        out = {"mem_mb": self.res(stage, "mem_mb"), "runtime": self.res(stage, "runtime"),
               "cpus_per_task": self.res(stage, "cpus")}
        if self.res(stage, "gpus"):
            out["gpu"] = self.res(stage, "gpus")
        for key in ("slurm_partition", "slurm_account", "slurm_extra"):
            if self.res(stage, key):
                out[key] = self.res(stage, key)
        return out

    def cost_params(self) -> str:
        """The cost table's params: each stage's CPUs and GPUs, and each benchmark
        directory's stage."""
        return as_json({"resources": {s: {"cpus": self.res(s, "cpus"), "gpus": self.res(s, "gpus") or 0}
                                      for s in self.config["resources"]},
                        "stage_of": BENCHMARK_STAGES})

    # ------------------------------------------------------------ paths
    def model_of(self, task: str) -> str:
        """The {model} of a task's paths: the decoder's name, or the encoder's."""
        return self.encoder if REGISTRY[task].family == "encoder" else self.model

    @staticmethod
    def data(task: str, split: str) -> str:
        return f"results/data/{task}/{split}.jsonl"

    @staticmethod
    def run_dir(model, task, scheme, run) -> str:
        """One SFT run's directory: its epoch and step checkpoints, samples.csv, run.json."""
        return f"results/sft/{model}/{task}/{scheme}/run{run}"

    def sft_dir(self, model, task, scheme, run, epoch) -> str:
        return f"{self.run_dir(model, task, scheme, run)}/epoch{epoch}"

    @staticmethod
    def merged_dir(model, task, scheme, epoch, mid) -> str:
        return f"results/merged/{model}/{task}/{scheme}/epoch{epoch}/{mid}"

    @staticmethod
    def eval_record(model, task, scheme, epoch, kind, name) -> str:
        return f"results/eval/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}.json"

    @staticmethod
    def score_file(model, task, scheme, epoch, kind, name, split) -> str:
        return f"results/scores/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}/{split}.csv"

    @staticmethod
    def table_files(n) -> list[str]:
        return [f"results/tables/table{n}.{ext}" for ext in ("csv", "md", "tex")]

    def sft_output_dirs(self) -> list[str]:
        """The sft rule's directories (templates): each epoch's checkpoint and steps/."""
        run = self.run_dir("{model}", "{task}", "{scheme}", "{run}")
        return [self.sft_dir("{model}", "{task}", "{scheme}", "{run}", e) for e in self.epochs] + \
            [f"{run}/steps"]

    def eval_records(self, task, scheme, epochs, specs=None, model=None) -> list[str]:
        """Every record of a task and scheme at `epochs`: the K runs and every merge (of the
        method specs `specs`, default merge.methods) of `model` (default the task's)."""
        out, model, ids = [], model or self.model_of(task), self.method_ids(task, specs)
        for e in epochs:
            out += [self.eval_record(model, task, scheme, e, "sft", f"run{r}") for r in self.runs]
            out += [self.eval_record(model, task, scheme, e, "merged", m) for m in ids]
        return out

    def analysis_targets(self) -> list[str]:
        """The tables and the figures this config asks for."""
        out = [f for n in self.tables() for f in self.table_files(n)]
        if self.figures:
            out += [f"results/figures/figure{n}.{ext}" for n in (1, 3, 4) for ext in ("png", "svg", "csv")]
            out += ["results/figures/figure1_rho.csv", "results/figures/figure1_rho.md"]
        return out

    def all_targets(self) -> list[str]:
        targets = self.analysis_targets()
        if self.tasks:
            targets += ["results/tables/cost.csv", "results/tables/cost.md"]
        for task in self.tasks:
            for scheme in self.schemes:
                targets += self.eval_records(task, scheme, self.merge_epochs)
                targets += [f"{self.run_dir(self.model_of(task), task, scheme, r)}/samples.csv"
                            for r in self.runs]
        return targets

    # ------------------------------------------------------------ data and base models
    def task_cfg(self, wildcards) -> dict:
        return self.config["tasks"][wildcards.task]

    def spec(self, wildcards) -> dict:
        """The model/encoder block of the {model} wildcard."""
        return self.models[wildcards.model]["spec"]

    def prepare_params(self, wildcards) -> str:
        return as_json({"data": self.task_cfg(wildcards)["data"], "seed": self.config["seed"]})

    def order_params(self, wildcards) -> str:
        return as_json({"epochs": self.config["epochs"], "seed": self.config["seed"],
                        "batch_size": self.task_cfg(wildcards)["train"]["batch_size"]})

    def tokenizer_data(self) -> list[str]:
        return [self.data(t, s) for t in self.decoder_tasks for s in SPLITS]

    def base_inputs(self, wildcards) -> dict:
        if self.spec(wildcards)["source"] == "tiny":
            return {"tokenizer": f"results/base/{wildcards.model}/tokenizer",
                    "corpus": f"results/base/{wildcards.model}/corpus.txt"}
        return {}

    def base_args(self, wildcards, input) -> str:
        if self.spec(wildcards)["source"] == "tiny":
            return f"--tokenizer {input.tokenizer} --corpus {input.corpus}"
        return ""

    def start_model(self, wildcards) -> str:
        """The model every SFT run of a task starts from, the base of its task vectors: the
        decoder base, or for an encoder task the encoder with the task's head
        (results/base/{encoder}/init/{task}: one head initialisation shared by all K runs)."""
        if REGISTRY[wildcards.task].family == "encoder":
            return f"results/base/{wildcards.model}/init/{wildcards.task}"
        return f"results/base/{wildcards.model}/model"

    # ------------------------------------------------------------ SFT and merges
    def run_dirs(self, wildcards) -> list[str]:
        """The K runs' directories of the wildcards' model, task and scheme."""
        return [self.run_dir(wildcards.model, wildcards.task, wildcards.scheme, r) for r in self.runs]

    def sub_models(self, wildcards) -> list[str]:
        return [self.sft_dir(wildcards.model, wildcards.task, wildcards.scheme, r, wildcards.epoch)
                for r in self.runs]

    def sft_launcher(self, wildcards, threads) -> str:
        """The warm worker's client (py), or accelerate launch with the configured config
        file and process count."""
        s = self.config["sft"]
        if s["accelerate_config"] is None:
            return self.py
        return (f"accelerate launch --config_file {s['accelerate_config']}"
                f" --num_processes {s['num_processes']}")

    def method_ids(self, task, specs=None) -> list[str]:
        """Every merge of one task's K runs: the method specs `specs` (default config
        merge.methods), seeded ones once per seed, resample's rounds from the task's
        resample_rounds."""
        return expand_methods(self.config["merge"]["methods"] if specs is None else specs,
                              self.seeds, rounds=self.config["tasks"][task]["resample_rounds"])

    def merge_inputs(self, wildcards, mid=None) -> dict:
        """A Table 1 merge (method id `mid`, default the {method} wildcard): the script, its
        code, the K runs, and the base where the method needs one."""
        mid = mid or wildcards.method
        name, settings = parse_method_id(mid)
        method = merge_method(name)
        soup = method.data == "validation_records"
        out = {"lib": self.merge_code(mid, "greedy_soup.py" if soup else "merge.py"),
               "sub_models": self.sub_models(wildcards)}
        if method.needs_base:
            out["base"] = self.start_model(wildcards)
        w = wildcards
        if method.data == "diagonal_fisher":
            out["fisher_dirs"] = [self.fisher_dir(w.model, w.task, w.scheme, r, w.epoch, settings["rows"])
                             for r in self.runs]
        if soup:
            out["validation"] = [self.validation_record(w.model, w.task, w.scheme, w.epoch, r)
                                 for r in self.runs]
            out["validation_split"] = self.data(w.task, "validation")
        return out

    @staticmethod
    def base_arg(wildcards, input) -> str:
        """--base, and the per-run data of the methods that read some (--fisher, or
        --validation and --validation-split)."""
        out = [f"--base {input.base}"] if "base" in input.keys() else []
        if "fisher_dirs" in input.keys():
            out.append("--fisher " + " ".join(input.fisher_dirs))
        if "validation" in input.keys():
            out.append("--validation " + " ".join(input.validation)
                       + f" --validation-split {input.validation_split}")
        return " ".join(out)

    @staticmethod
    def validation_record(model, task, scheme, epoch, run) -> str:
        """Run `run`'s evaluation record on the validation split (rule validate_runs)."""
        return f"results/validation/{model}/{task}/{scheme}/epoch{epoch}/run{run}.json"

    def validation_outputs(self) -> dict:
        records = [self.validation_record("{model}", "{task}", "{scheme}", "{epoch}", r)
                   for r in self.runs]
        return {"records": records, "prov": [f"{r}.prov.json" for r in records]}

    def validation_params(self, wildcards) -> str:
        return as_json(self.eval_cfg(wildcards.task, "sft", wildcards.epoch, wildcards.scheme,
                                     wildcards.model))

    def eval_cfg(self, task, kind, epoch, scheme, model) -> dict:
        """An evaluation's params: the task's evaluate section (config.eval_section) and what
        labels its records."""
        return eval_section(self.config, task) | {
            "kind": kind, "epoch": int(epoch), "scheme": scheme, "model": model,
            "max_length": self.config["tasks"][task]["train"]["max_length"]}

    @staticmethod
    def fisher_dir(model, task, scheme, run, epoch, rows) -> str:
        """One run's diagonal Fisher at one epoch over `rows` training rows (rule diagonal_fisher)."""
        return f"results/fisher/{model}/{task}/{scheme}/epoch{epoch}/run{run}-n{rows}"

    def fisher_params(self, wildcards) -> str:
        return as_json({"max_length": self.task_cfg(wildcards)["train"]["max_length"]})

    def merge_params(self, wildcards, mid=None) -> str:
        """config merge.weights (length K, summing to 1) for the average and the selections;
        task-vector methods weight each run 1. `mid`: as merge_inputs."""
        m = merge_method(parse_method_id(mid or wildcards.method)[0])
        out = {"weights": self.config["merge"]["weights"] if m.weights != "task" else None}
        if m.data == "validation_records":  # greedy soup evaluates its candidates as the runs were
            w = wildcards
            out = {"task": w.task, "evaluate": self.eval_cfg(w.task, "soup", w.epoch, w.scheme, w.model)}
        return as_json(out)

    # ------------------------------------------------------------ evaluation
    def candidate_model(self, wildcards, name) -> str:
        """The checkpoint an evaluation record `name` (run{r} or a merge id) is of."""
        w = wildcards
        if w.kind == "sft":
            return self.sft_dir(w.model, w.task, w.scheme, name.removeprefix("run"), w.epoch)
        return self.merged_dir(w.model, w.task, w.scheme, w.epoch, name)

    def judge_of(self, task) -> dict:
        """The local AlpacaEval judge's model, for tasks scored by alpaca_eval with judge: local."""
        ev = self.config["tasks"][task]["evaluate"]
        if REGISTRY[task].evaluator != "alpaca_eval" or ev["judge"] != "local":
            return {}
        return {"judge": ev["judge_model"] or f"results/base/{self.model}/model"}

    def judge_input(self, wildcards) -> dict:
        return self.judge_of(wildcards.task)

    @staticmethod
    def judge_arg(wildcards, input) -> str:
        return f"--judge-model {input.judge}" if "judge" in input.keys() else ""

    def eval_inputs(self, models):
        """An evaluation job's inputs besides its script: `models(wildcards)` (the
        checkpoints it evaluates), the task's test split and the local judge where it has one."""
        def inputs(wildcards):
            return {**self.judge_input(wildcards), "models": models(wildcards),
                    "test": self.data(wildcards.task, "test")}
        return inputs

    def eval_dir(self) -> str:
        return self.eval_record("{model}", "{task}", "{scheme}", "{epoch}", "{kind}", "x").rsplit("/", 1)[0]

    def eval_outputs(self, names) -> dict:
        """The records of `names` (wildcard templates) in one evaluation directory, and their
        provenance records."""
        records = [f"{self.eval_dir()}/{n}.json" for n in names]
        return {"records": records, "prov": [f"{r}.prov.json" for r in records]}

    def eval_params(self, wildcards) -> str:
        """An evaluation job's params: the task's evaluate section and what labels its
        records (each model's name comes with its --candidate)."""
        w = wildcards
        return as_json(self.eval_cfg(w.task, w.kind, w.epoch, w.scheme, w.model))

    @staticmethod
    def candidate_args(wildcards, input, output) -> str:
        """--candidate NAME MODEL RECORD for each model of an evaluation job (the name is the
        record's file name)."""
        return " ".join(f"--candidate {Path(rec).name.removesuffix('.json')} {model} {rec}"
                        for model, rec in zip(input.models, output.records, strict=True))

    # ------------------------------------------------------------ multi-task (Table 3)
    def group_ids(self, group) -> list[str]:
        g = self.groups[group]
        return expand_methods(g["methods"], g["seeds"] or self.seeds, rounds=1)

    def single_task_model(self, group, task) -> str:
        """A task's single-task model in a group: the external model it names, else the
        configured SFT run at the report epoch."""
        g = self.groups[group]
        if task in g["models"]:
            return g["models"][task]
        return self.sft_dir(self.model, task, self.schemes[0], g["run"], self.report_epoch)

    def group_members(self, group) -> dict[str, str]:
        """task -> the name of its model in the group's aligned/ directory: tasks naming the
        same model (WizardMath for GSM8K and MATH) share the first one's, merged once."""
        seen, out = {}, {}
        for t in self.groups[group]["tasks"]:
            out[t] = seen.setdefault(self.single_task_model(group, t), t)
        return out

    def group_models(self, group) -> list[str]:
        """The distinct members' names, in task order."""
        return list(dict.fromkeys(self.group_members(group).values()))

    def group_base(self, group) -> str:
        return self.groups[group]["base"] or f"results/base/{self.model}/model"

    def group_merge_weights(self, group):
        """The merged models' weights (one per distinct model), from the per-task weights."""
        g = self.groups[group]
        if g["weights"] is None:
            return None
        members = self.group_members(group)
        return [w for t, w in zip(g["tasks"], g["weights"]) if members[t] == t]

    def multitask_align_models(self, wildcards) -> list[str]:
        """Local single-task models and base (hub ids are resolved by the script)."""
        g = self.groups[wildcards.group]
        local = [self.single_task_model(wildcards.group, t) for t in g["tasks"]]
        local.append(self.group_base(wildcards.group))
        return sorted({p for p in local if p.startswith("results/") or Path(p).exists()})

    def multitask_align_params(self, wildcards) -> str:
        g = wildcards.group
        return as_json({"models": {m: self.single_task_model(g, m) for m in self.group_models(g)},
                        "base": self.group_base(g)})

    def multitask_merge_params(self, wildcards) -> str:
        return as_json({"weights": self.group_merge_weights(wildcards.group), "group": wildcards.group})

    def multitask_merge_args(self, wildcards, input) -> str:
        """--base (where the method needs one) and the aligned members' directories."""
        base = (f"--base {input.aligned}/base "
                if merge_method(parse_method_id(wildcards.method)[0]).needs_base else "")
        return base + " ".join(f"{input.aligned}/{m}" for m in self.group_models(wildcards.group))

    def single_record(self, group, task) -> str:
        """Table 3's single row for a task: the SFT run's own record, or the external model's."""
        g = self.groups[group]
        if task in g["models"]:
            return f"results/eval/multitask/{group}/{task}/single.json"
        return self.eval_record(self.model, task, self.schemes[0], self.report_epoch, "sft", f"run{g['run']}")

    @staticmethod
    def multitask_model(wildcards) -> str:
        """The aligned single-task models' directory (the task's model is inside), or the merge."""
        if wildcards.name == "single":
            return f"results/multitask/{wildcards.group}/aligned"
        return f"results/multitask/{wildcards.group}/{wildcards.name}"

    def multitask_model_path(self, wildcards, input) -> str:
        if wildcards.name == "single":
            return f"{input.model}/{self.group_members(wildcards.group)[wildcards.task]}"
        return input.model

    @staticmethod
    def multitask_eval_rule(group) -> str:
        """The rule that evaluates one merge of `group` on every task of the group."""
        return f"{MULTITASK_EVAL_PREFIX}{group}"

    def _group_judge(self, group) -> dict:
        judges = {j for t in self.groups[group]["tasks"] for j in self.judge_of(t).values()}
        if len(judges) > 1:
            raise PlanError(f"multitask group {group!r}: its tasks name different local judges "
                            f"{sorted(judges)}; one evaluation job takes one")
        return {"judge": judges.pop()} if judges else {}

    def multitask_group_eval_inputs(self, group, name) -> dict:
        """A group merge's evaluation on every task: the merge, each task's test split, and
        the local AlpacaEval judge where a task has one."""
        return {"model": f"results/multitask/{group}/{name}",
                "test": [self.data(t, "test") for t in self.groups[group]["tasks"]],
                **self._group_judge(group)}

    def multitask_eval_cfg(self, group, task, name) -> dict:
        """The params of a group's record on `task` for model `name` (a merge id, or single)."""
        return self.eval_cfg(task, "sft" if name == "single" else "merged", self.report_epoch,
                             self.schemes[0], f"multitask-{group}")

    def multitask_eval_params(self, wildcards) -> str:
        return as_json(self.multitask_eval_cfg(wildcards.group, wildcards.task, wildcards.name))

    def group_eval_params(self, group, name) -> str:
        return as_json({"tasks": {t: self.multitask_eval_cfg(group, t, name)
                                  for t in self.groups[group]["tasks"]}})

    # ------------------------------------------------------------ tables
    def table_records(self, n) -> list[tuple[str | None, str]]:
        """(block or None, record path) of every evaluation record table `n` reads, in its
        order (its registry entry's records)."""
        if n not in self._table_records:
            self._table_records[n] = table_spec(n).records(self)
        return self._table_records[n]

    def tables(self) -> list[str]:
        """The tables this config asks for: each with records (Table 1 always)."""
        return [n for n, spec in TABLES.items() if spec.always or self.table_records(n)]

    def table_params(self, n) -> str:
        return as_json(table_spec(n).params(self)
                       | {"mixed_backends": self.config["evaluate"]["mixed_backends"]})

    def table_args(self, n) -> str:
        """The records as the table script takes them: PATH, or BLOCK=PATH."""
        return " ".join(p if b is None else f"{b}={p}" for b, p in self.table_records(n))

    # ------------------------------------------------------------ scores, curves, figures
    def score_params(self, wildcards) -> str:
        tr = self.task_cfg(wildcards)["train"]
        return as_json({"max_length": tr["max_length"], "batch_size": tr["micro_batch_size"]})

    def fig_run_dir(self, r) -> str:
        return self.run_dir(self.fig_model, self.fig_task, self.fig_scheme, r)

    def fig_score(self, kind, name) -> str:
        """A model's per-sample losses on the figure task's training rows (last epoch)."""
        return self.score_file(self.fig_model, self.fig_task, self.fig_scheme, self.epochs[-1],
                               kind, name, "train")

    def figure_inputs(self, n) -> list[tuple[str, str]]:
        """NAME=PATH pairs of a figure's inputs: the runs' order positions (samples.csv) and
        losses after training (scores), the merges' scores; Figure 4 the curves."""
        samples = [(f"run{r}", f"{self.fig_run_dir(r)}/samples.csv") for r in self.runs]
        runs = [(f"run{r}", self.fig_score("sft", f"run{r}")) for r in self.runs]
        merged = [(m, self.fig_score("merged", m)) for m in self.fig_ids]
        if n == 1:
            return samples + runs + merged
        if n == 3:
            a = self.figures["anchor"]
            return samples[a:a + 1] + runs + merged
        curves = f"results/curves/{self.fig_model}/{self.fig_task}/{self.fig_scheme}"
        return [("single", f"{curves}/single.csv")] + [(m, f"{curves}/{m}.csv") for m in self.fig_ids]

    def figure_params(self) -> str:
        return as_json({k: self.figures[k] for k in ("panels", "bins", "segments")})

    def curve_inputs(self, wildcards) -> dict:
        """The K runs' checkpoints (every epoch's and steps/) and run.json; a merge's curve
        also the method's code and the base where it needs one."""
        runs = [f"{run}/{x}" for run in self.run_dirs(wildcards)
                for x in [f"epoch{e}" for e in self.epochs] + ["steps", "run.json"]]
        single = wildcards.method == "single"
        out = {"lib": self.code("curve.py") if single else self.merge_code(wildcards.method, "curve.py"),
               "runs": runs, "rows": self.data(wildcards.task, "validation")}
        if not single and merge_method(parse_method_id(wildcards.method)[0]).needs_base:
            out["base"] = self.start_model(wildcards)
        return out

    def curve_args(self, wildcards, input) -> str:
        extra = "" if wildcards.method == "single" else f"--method-id {wildcards.method}"
        return f"{extra} {self.base_arg(wildcards, input)} {' '.join(self.run_dirs(wildcards))}"

    def curve_params(self, wildcards) -> str:
        return as_json(json.loads(self.score_params(wildcards)) | (
            {} if wildcards.method == "single" else json.loads(self.merge_params(wildcards))))


# ---------------------------------------------------------------- what an edit reruns
_RULE = re.compile(r"^\s*(?:use rule (\w+) as (\w+) with:|rule (\w+):|rule:\n\s+name:\n\s+(.+))$", re.M)
_SCRIPT = re.compile(r'P\.(?:script|script_inputs)\("([\w.]+)"\)')
_MERGES = ("merge", "merge_seeds", "multitask_merge", "curve")


def rule_blocks(rules_dir: str | Path = PROJECT / "rules"):
    """(file name, rule name as written, parent rule or None, body) of every rule of
    rules/*.smk: `rule NAME:`, `rule:` with `name:` (the name's expression as written, for a
    rule made in a loop) and `use rule PARENT as NAME with:`."""
    for f in sorted(Path(rules_dir).glob("*.smk")):
        text = f.read_text()
        heads = list(_RULE.finditer(text))
        for i, h in enumerate(heads):
            body = text[h.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
            if h.group(1):
                yield f.name, h.group(2), h.group(1), body
            else:
                yield f.name, h.group(3) or h.group(4).strip(), None, body


def rule_scripts(rules_dir: str | Path = PROJECT / "rules") -> dict[str, str]:
    """rule -> the script its shell runs, read from rules/*.smk (a rule made by `use rule`
    runs its parent's unless its input names another; a rule named by an expression is shown with the expression's
    placeholder: figure{N}, table{N}, evaluate_multitask_{GROUP})."""
    placeholders = {'f"figure{_n}"': "figure{N}", 'f"table{_n}"': f"{TABLE_PREFIX}{{N}}",
                    "P.multitask_eval_rule(_group)": f"{MULTITASK_EVAL_PREFIX}{{GROUP}}"}
    out = {}
    for _, name, parent, body in rule_blocks(rules_dir):
        found = _SCRIPT.search(body)
        if parent:  # its parent's script, unless it names its own
            out[name] = found.group(1) if found else out[parent]
        elif found:
            out[placeholders.get(name, name)] = found.group(1)
    return out


def rerun_table(rules_dir: str | Path = PROJECT / "rules") -> str:
    """Markdown: for each package module, the rules whose jobs Snakemake reruns when it is
    edited (modules with the same rules share a row). A merge method's own module reruns
    only that method's merges (and their evaluations, tables and curves)."""
    order = {r: i for i, r in enumerate(STAGES)}
    order |= {f"{TABLE_PREFIX}{{N}}": order["cost"] - 0.5, "figure{N}": order["figure1"],
              f"{MULTITASK_EVAL_PREFIX}{{GROUP}}": order["evaluate_multitask"] + 0.5}
    scripts = dict(sorted(rule_scripts(rules_dir).items(), key=lambda kv: order[kv[0]]))
    modules = sorted(p.relative_to(LIB).as_posix() for p in LIB.rglob("*.py"))
    # the curve of the runs themselves ("single") has no method entry: it takes the registry
    # whole, so curve is listed in full for it
    merges = [r for r in _MERGES if r in scripts and r != "curve"]
    reruns: dict[str, list[str]] = {}
    for mod in modules:
        f = LIB / mod
        rules = [r for r, s in scripts.items() if f in closure(PROJECT / "scripts" / s)
                 and not (r in merges and f == REGISTRY_FILE)]
        methods = [n for n in METHODS if f in Plan.method_files(n)]
        if f == REGISTRY_FILE:
            rules.append(f"{', '.join(merges)}: the merges of the methods whose entries changed only")
        elif methods and "merge" not in rules:
            rules.append(f"{', '.join(r for r in _MERGES if r in scripts)}: the merges of "
                         f"{', '.join(methods)} only")
        reruns[mod] = rules
    rows: dict[str, list[str]] = {}
    for mod, rules in reruns.items():
        key = ", ".join(rules) if len(rules) < len(scripts) else "every rule"
        rows.setdefault(key or "none (no rule's script imports it)", []).append(mod)
    lines = ["| modules (ordermerge/) | rules whose jobs rerun |", "|---|---|"]
    for key, mods in sorted(rows.items(), key=lambda kv: (-len(kv[0].split(",")), kv[1])):
        lines.append(f"| {', '.join(f'`{m}`' for m in mods)} | {key} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse
    argparse.ArgumentParser(
        prog="python -m ordermerge.plan",
        description="Print, as Markdown, which rules' jobs rerun when each module of the "
                    "package is edited, read from rules/*.smk and the sources (the table of "
                    "docs/reruns.md).").parse_args()
    print(rerun_table(), end="")
