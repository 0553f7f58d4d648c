"""The plan's part that holds the run's dimensions, read from a checked and defaulted
config: the models, tasks, order schemes, runs, epochs, merge seeds, multi-task groups and
the figures' settings. Nothing here reads the disk or raises."""
from __future__ import annotations

from ..data.registry import TASKS
from ..merge.methods import expand as expand_methods
from .config import model_specs


class Dimensions:
    def __init__(self, config: dict):
        self.config = c = config
        self.model = c["model"]["name"]
        self.encoder = c["encoder"]["name"]
        # every model: the primary decoder and encoder, and models.decoders/encoders (Table 2)
        self.models = model_specs(c)
        self.decoders = [m for m, v in self.models.items() if v["family"] == "decoder"]
        self.encoders = [m for m, v in self.models.items() if v["family"] == "encoder"]
        self.tasks = list(c["tasks"])
        self.decoder_tasks = [t for t in self.tasks if TASKS[t].family == "decoder"]
        self.encoder_tasks = [t for t in self.tasks if TASKS[t].family == "encoder"]
        self.schemes = c["order_schemes"]
        # Table 4: tasks also run under fix-batch orders, compared with their shuffled runs
        self.table4 = c["table4"] or {"tasks": [], "methods": []}
        self.table4_tasks = self.table4["tasks"]
        self.figures = c["figures"] if c["tasks"] else None
        # Figure 1's negative controls: the anchor's order trained again, each its own scheme
        ctl = (self.figures or {}).get("controls") or {}
        self.controls = ((["control-repeat"] if ctl.get("repeat") else [])
                         + (["control-reseed"] if ctl.get("reseed") is not None else []))
        self.all_schemes = list(dict.fromkeys(
            self.schemes + (["shuffle", "fix-batch"] if self.table4_tasks else []) + self.controls))
        self.runs = list(range(c["num_sub_models"]))
        self.epochs = list(range(1, c["epochs"] + 1))
        self.merge_epochs = c["merge"]["epochs"] or self.epochs
        self.report_epoch = c["report"]["epoch"] or self.epochs[-1]
        self.seeds = c["merge"]["seeds"]
        # a group set to null in a layered config file is removed
        self.groups = {n: g for n, g in c["multitask"]["groups"].items() if g is not None}
        if self.figures:
            self.fig_task = self.figures["task"] or self.decoder_tasks[0]
            self.fig_model = self.model_of(self.fig_task)
            self.fig_scheme = self.schemes[0]
            self.fig_ids = expand_methods(self.figures["methods"], self.seeds[:1],
                                          rounds=c["tasks"][self.fig_task]["resample_rounds"])

    def model_of(self, task: str) -> str:
        """The {model} of a task's paths: the decoder's name, or the encoder's."""
        return self.encoder if TASKS[task].family == "encoder" else self.model

    def method_ids(self, task, specs=None) -> list[str]:
        """Every merge of one task's K runs: the method specs `specs` (default config
        merge.methods), seeded ones once per seed, resample's rounds from the task's
        resample_rounds."""
        return expand_methods(self.config["merge"]["methods"] if specs is None else specs,
                              self.seeds, rounds=self.config["tasks"][task]["resample_rounds"])

    def seeded_rows_pattern(self) -> str:
        """The wildcard constraint of the jobs that make (or evaluate) every merge seed of
        one seeded setting (merge_seeds, evaluate_seeds, general_eval_seeds): the row ids
        some spec of the config expands over merge.seeds. A spec that names its seed makes
        that one merge with the single-merge rules (before, the seeds job made every seed
        and only one was read). Any other row id matches none, so its merges fall to the
        single-merge rules: correct whichever spec list asks for it."""
        import re

        from ..merge.methods import get, row_of
        lists = [self.config["merge"]["methods"], self.table4["methods"]]
        lists += [(self.config.get(k) or {}).get("methods") or [] for k in ("table2", "lora", "general_eval")]
        if self.figures:
            lists.append(self.figures["methods"])
        rounds = {self.config["tasks"][t]["resample_rounds"] for t in self.tasks} or {None}
        rows = {row_of(mid)[0] for specs in lists for spec in specs
                if get(spec["method"]).random and "seed" not in spec
                for r in rounds for mid in expand_methods([spec], self.seeds, rounds=r)}
        return "|".join(re.escape(r) for r in sorted(rows)) or r"(?!x)x"
