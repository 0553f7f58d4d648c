"""The rules of rules/report.smk and rules/analysis.smk: the tables, the per-sample scores,
the curves and the figures."""
from __future__ import annotations

import json

from ...merge.methods import get as merge_method, parse_method_id
from ...report.registry import TABLES, get as table_spec
from ..common import as_json


class ReportRules:
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

    def score_params(self, wildcards) -> str:
        tr = self.task_cfg(wildcards)["train"]
        return as_json({"max_length": tr["max_length"], "batch_size": tr["micro_batch_size"]})

    def fig_run_dir(self, r, scheme=None) -> str:
        return self.run_dir(self.fig_model, self.fig_task, scheme or self.fig_scheme, r)

    def fig_score(self, kind, name, scheme=None) -> str:
        """A model's per-sample losses on the figure task's training rows (last epoch)."""
        return self.score_file(self.fig_model, self.fig_task, scheme or self.fig_scheme,
                               self.epochs[-1], kind, name, "train")

    def figure_inputs(self, n) -> list[tuple[str, str]]:
        """NAME=PATH pairs of a figure's inputs: the runs' order positions (samples.csv) and
        losses after training (scores), the merges' scores; Figure 4 the curves."""
        samples = [(f"run{r}", f"{self.fig_run_dir(r)}/samples.csv") for r in self.runs]
        runs = [(f"run{r}", self.fig_score("sft", f"run{r}")) for r in self.runs]
        merged = [(m, self.fig_score("merged", m)) for m in self.fig_ids]
        if n == 1:  # and the controls: the anchor's order again (named by their scheme)
            a = self.figures["anchor"]
            controls = [(c, path) for c in self.controls for path in
                        (f"{self.fig_run_dir(a, c)}/samples.csv", self.fig_score("sft", f"run{a}", c))]
            return samples + runs + merged + controls
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
