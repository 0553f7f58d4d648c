"""The plan's part that gives each rule its threads and Snakemake / SLURM resources, from the
config stage stages.py declares for it."""
from __future__ import annotations

from .common import PlanError, as_json
from .stages import BENCHMARK_STAGES, stage_of


class Resources:
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
            raise PlanError(f"rule {rule!r} has no stage in ordermerge/workflow/plan.py STAGES")
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
