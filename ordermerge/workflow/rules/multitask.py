"""The rules of rules/multitask.smk (Table 3): one merge of a group's single-task models,
evaluated on each of the group's tasks."""
from __future__ import annotations

from pathlib import Path

from ...merge.methods import expand as expand_methods, get as merge_method, parse_method_id
from ..common import PlanError, as_json
from ..stages import MULTITASK_EVAL_PREFIX


class MultitaskRules:
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
