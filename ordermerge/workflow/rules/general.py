"""The rules of rules/general.smk: every Table 1 model (the K runs, each merge at the report
epoch, the base) on the general benchmarks of config general_eval through lm-eval (Table 5).
The jobs are grouped as the evaluation jobs are (the K runs in one job, the seeds of one merge
method in one, each other merge alone), so that editing one merge method reruns only its
own evaluations."""
from __future__ import annotations

import functools
from pathlib import Path

from ...general_eval import KEYS, data_files
from ..common import as_json


class GeneralRules:
    @property
    def general(self) -> dict | None:
        return self.config.get("general_eval")

    def general_finetuned(self) -> list[str]:
        """The Table 1 tasks whose models are evaluated: general_eval.finetuned, else every
        decoder task (LoRA runs of a task's own train.adapter included: each evaluated as its
        update folded into the base)."""
        g = self.general
        if g is None:
            return []
        return list(g["finetuned"]) if g["finetuned"] is not None else list(self.decoder_tasks)

    @staticmethod
    def general_dir(model, task, scheme, epoch, kind, name) -> str:
        """The records of one model on every general benchmark (one file each)."""
        return f"results/general/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}"

    @staticmethod
    def general_base_dir(model) -> str:
        return f"results/general/{model}/base"

    def general_records(self) -> list[tuple[str, str]]:
        """(fine-tuned task, record) of every Table 5 record, in the table's order: per task,
        the base, the K runs and each merge (general_eval.methods, default merge.methods),
        each on every benchmark."""
        if self.general is None:
            return []
        out, gtasks, e, scheme = [], self.general["tasks"], self.report_epoch, self.schemes[0]
        for t in self.general_finetuned():
            model = self.model_of(t)
            dirs = [self.general_base_dir(model)] if self.general["base"] else []
            dirs += [self.general_dir(model, t, scheme, e, "sft", f"run{r}") for r in self.runs]
            dirs += [self.general_dir(model, t, scheme, e, "merged", m)
                     for m in self.method_ids(t, self.general["methods"])]
            out += [(t, f"{d}/{g}.json") for d in dirs for g in gtasks]
        return out

    def general_inputs(self, models):
        """A general-benchmark job's inputs besides its script: `models(wildcards)`, the
        files of the local task YAMLs it reads (their directories under include_path), and
        for LoRA runs the base their updates are folded into."""
        def inputs(wildcards):
            lora = hasattr(wildcards, "task") and self.is_lora(wildcards)
            return {"models": models(wildcards), "tasks": self.general_files,
                    **({"base": self.start_model(wildcards)} if lora else {})}
        return inputs

    @functools.cached_property
    def general_files(self) -> list[str]:
        """The local task files every general-benchmark job reads: found once per plan, not
        once per job."""
        return data_files(self.general["include_path"], self.general["tasks"])

    def general_outputs(self, names, base: bool = False) -> dict:
        """The records of `names` (wildcard templates) on every benchmark, and their
        provenance records."""
        dirs = ([self.general_base_dir("{model}")] if base else
                [self.general_dir("{model}", "{task}", "{scheme}", "{epoch}", "{kind}", n)
                 for n in names])
        records = [f"{d}/{g}.json" for d in dirs for g in self.general["tasks"]]
        return {"records": records, "prov": [f"{r}.prov.json" for r in records]}

    def general_params(self, wildcards) -> str:
        """The settings the records depend on, and what labels them (model, task, scheme,
        epoch, kind; the base's: kind base)."""
        w = wildcards
        labels = ({"model": w.model, "finetuned": None, "scheme": None, "epoch": None,
                   "kind": "base"} if not hasattr(w, "task") else
                  {"model": w.model, "finetuned": w.task, "scheme": w.scheme,
                   "epoch": int(w.epoch), "kind": w.kind})
        # the engine's settings where vLLM runs the models (editing them reruns those only)
        vllm = self.config["evaluate"]["vllm"] if self.general["backend"] == "vllm" else None
        return as_json({**{k: self.general[k] for k in KEYS}, "vllm": vllm, **labels})

    def general_candidates(self, wildcards, input, output) -> str:
        """--candidate NAME MODEL DIR for each model of a job: DIR/<benchmark>.json are its
        records."""
        dirs = list(dict.fromkeys(str(Path(r).parent) for r in output.records))
        names = ["base"] if not hasattr(wildcards, "task") else [Path(d).name for d in dirs]
        return " ".join(f"--candidate {n} {m} {d}"
                        for n, m, d in zip(names, input.models, dirs, strict=True))

    def general_models(self) -> list[str]:
        """The decoder models whose base is evaluated (rule general_eval_base): those of the
        fine-tuned tasks (decoder tasks, by the config check)."""
        return list(dict.fromkeys(self.model_of(t) for t in self.general_finetuned()))
