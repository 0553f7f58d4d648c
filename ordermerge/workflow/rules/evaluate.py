"""The rules of rules/evaluate.smk: each evaluation job's models, records and params."""
from __future__ import annotations

from pathlib import Path

from ...data.registry import TASKS
from ..common import as_json
from ..config import eval_settings


class EvaluateRules:
    def eval_cfg(self, task, kind, epoch, scheme, model) -> dict:
        """An evaluation's params: the task's evaluate section and what labels its records
        (config.eval_settings)."""
        return eval_settings(self.config, task, kind, epoch, scheme, model)

    def candidate_model(self, wildcards, name) -> str:
        """The checkpoint an evaluation record `name` (run{r} or a merge id) is of."""
        w = wildcards
        if w.kind == "sft":
            return self.sft_dir(w.model, w.task, w.scheme, name.removeprefix("run"), w.epoch)
        return self.merged_dir(w.model, w.task, w.scheme, w.epoch, name)

    def judge_of(self, task) -> dict:
        """The local AlpacaEval judge's model, for tasks scored by alpaca_eval with judge: local."""
        ev = self.config["tasks"][task]["evaluate"]
        if TASKS[task].evaluator != "alpaca_eval" or ev["judge"] != "local":
            return {}
        return {"judge": ev["judge_model"] or f"results/base/{self.model}/model"}

    def judge_input(self, wildcards) -> dict:
        return self.judge_of(wildcards.task)

    @staticmethod
    def judge_arg(wildcards, input) -> str:
        return f"--judge-model {input.judge}" if "judge" in input.keys() else ""

    def eval_inputs(self, models):
        """An evaluation job's inputs besides its script: `models(wildcards)` (the
        checkpoints it evaluates), the task's test split, the local judge where it has one,
        and for LoRA runs the base their adapters are folded into."""
        def inputs(wildcards):
            base = {"base": self.start_model(wildcards)} if self.is_lora(wildcards) else {}
            return {**self.judge_input(wildcards), "models": models(wildcards),
                    "test": self.data(wildcards.task, "test"), **base}
        return inputs

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
    def ensemble_args(wildcards, input, output) -> str:
        """--ensemble NAME RECORD MODEL...: one record of the job's models' ensemble."""
        (rec,) = output.records
        return f"--ensemble {Path(rec).name.removesuffix('.json')} {rec} " + " ".join(input.models)

    @staticmethod
    def candidate_args(wildcards, input, output) -> str:
        """--candidate NAME MODEL RECORD for each model of an evaluation job (the name is the
        record's file name)."""
        return " ".join(f"--candidate {Path(rec).name.removesuffix('.json')} {model} {rec}"
                        for model, rec in zip(input.models, output.records, strict=True))
