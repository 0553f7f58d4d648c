"""The rules of rules/data.smk and rules/base.smk: the data, the orders, the base models."""
from __future__ import annotations

from ...data.registry import SPLITS, TASKS
from ..common import as_json
from ..config import lora_train


class DataRules:
    def task_cfg(self, wildcards) -> dict:
        return self.config["tasks"][wildcards.task]

    def spec(self, wildcards) -> dict:
        """The model/encoder block of the {model} wildcard."""
        return self.models[wildcards.model]["spec"]

    def prepare_params(self, wildcards) -> str:
        return as_json({"data": self.task_cfg(wildcards)["data"], "seed": self.config["seed"]})

    def order_params(self, wildcards) -> str:
        out = {"epochs": self.config["epochs"], "seed": self.config["seed"],
               "batch_size": self.task_cfg(wildcards)["train"]["batch_size"]}
        if wildcards.scheme in self.controls:  # the anchor's order, the anchor's or another seed
            ctl = self.figures["controls"]
            out["control"] = {"scheme": self.fig_scheme, "seed": self.config["seed"]
                              if wildcards.scheme == "control-repeat" else ctl["reseed"]}
        return as_json(out)

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
        if TASKS[wildcards.task].family == "encoder":
            return f"results/base/{wildcards.model}/init/{wildcards.task}"
        # LoRA runs (the lora section) adapt the primary decoder's base
        return f"results/base/{self.models[wildcards.model].get('base_of', wildcards.model)}/model"

    def is_lora(self, wildcards) -> bool:
        """Whether the wildcards' runs are LoRA runs: the lora section's, or a task whose
        own train section has an adapter."""
        return self.train_cfg(wildcards).get("adapter") is not None

    def train_cfg(self, wildcards) -> dict:
        return self.train_of(wildcards.model, wildcards.task)

    def sft_monitor(self) -> str:
        """sft.trackers and sft.progress_s as the SFT jobs read them (progress.MONITOR_ENV)."""
        s = self.config["sft"]
        return as_json({"trackers": s["trackers"], "progress_s": s["progress_s"]})

    def train_of(self, model: str, task: str) -> dict:
        """An SFT run's train section: the task's, or for LoRA runs with the lora section's
        changes and adapter."""
        if "lora" in self.models[model]:
            return lora_train(self.config, task)
        return self.config["tasks"][task]["train"]
