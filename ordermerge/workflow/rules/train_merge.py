"""The rules of rules/train.smk and rules/merge.smk: the SFT runs, the merges, and the
per-run data the data-aware merges read (Fisher, the validation records of greedy soup)."""
from __future__ import annotations

from ...merge.methods import get as merge_method, parse_method_id
from ..common import as_json


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
        out = {"weights": self.config["merge"]["weights"] if m.weights != "task" else None}
        if m.data == "validation_records":  # greedy soup evaluates its candidates as the runs were
            w = wildcards
            out = {"task": w.task, "evaluate": self.eval_cfg(w.task, "soup", w.epoch, w.scheme, w.model)}
        return as_json(out)
