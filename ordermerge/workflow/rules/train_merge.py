"""The rules of rules/train.smk and rules/merge.smk: the SFT runs, the merges, and the
per-run data the data-aware merges read (Fisher, the validation records of greedy soup)."""
from __future__ import annotations

from ...merge.methods import get as merge_method, parse_method_id
from ..common import as_json
from ...merge.rundata import held_by, run_data


class TrainMergeRules:
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

    def merge_inputs(self, wildcards, mid=None) -> dict:
        """A Table 1 merge (method id `mid`, default the {method} wildcard): the script, its
        code, the K runs, and the base where the method needs one (always for LoRA runs:
        their merge adds the base to the merged update)."""
        mid = mid or wildcards.method
        name, settings = parse_method_id(mid)
        method = merge_method(name)
        data = run_data(method)  # the per-run data it reads (rundata.py), if any
        out = {"lib": self.merge_code(mid, data.script if data else "merge.py"),
               "sub_models": self.sub_models(wildcards)}
        if method.needs_base or self.is_lora(wildcards):
            out["base"] = self.start_model(wildcards)
        if data:
            out |= data.inputs(self, wildcards, settings)
        return out

    @staticmethod
    def base_arg(wildcards, input) -> str:
        """--base, and the per-run data of the methods that read some (rundata.py: --fisher,
        or --validation and --validation-split)."""
        out = [f"--base {input.base}"] if "base" in input.keys() else []
        return " ".join(out + [data.args(input) for data in held_by(input)])

    def validation_outputs(self) -> dict:
        records = [self.validation_record("{model}", "{task}", "{scheme}", "{epoch}", r)
                   for r in self.runs]
        return {"records": records, "prov": [f"{r}.prov.json" for r in records]}

    def validation_params(self, wildcards) -> str:
        return as_json(self.eval_cfg(wildcards.task, "sft", wildcards.epoch, wildcards.scheme,
                                     wildcards.model))

    def fisher_params(self, wildcards) -> str:
        return as_json({"max_length": self.task_cfg(wildcards)["train"]["max_length"]})

    def merge_params(self, wildcards, mid=None) -> str:
        """config merge.weights (length K, summing to 1) for the average and the selections;
        task-vector methods weight each run 1. `mid`: as merge_inputs."""
        m = merge_method(parse_method_id(mid or wildcards.method)[0])
        data = run_data(m)
        if data and data.params:  # in place of the weights (greedy soup: its evaluation's)
            return as_json(data.params(self, wildcards))
        return as_json({"weights": self.config["merge"]["weights"] if m.weights != "task" else None})
