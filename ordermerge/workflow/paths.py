"""The plan's path templates (strings relative to the working directory, as Snakemake's
are) and the targets a config asks for."""
from __future__ import annotations


class Paths:
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

    @staticmethod
    def validation_record(model, task, scheme, epoch, run) -> str:
        """Run `run`'s evaluation record on the validation split (rule validate_runs)."""
        return f"results/validation/{model}/{task}/{scheme}/epoch{epoch}/run{run}.json"

    @staticmethod
    def fisher_dir(model, task, scheme, run, epoch, rows) -> str:
        """One run's diagonal Fisher at one epoch over `rows` training rows (rule diagonal_fisher)."""
        return f"results/fisher/{model}/{task}/{scheme}/epoch{epoch}/run{run}-n{rows}"

    @staticmethod
    def gram_dir(model, task, scheme, run, epoch, rows) -> str:
        """One run's linear-layer input Grams at one epoch over `rows` training rows (rule input_gram)."""
        return f"results/gram/{model}/{task}/{scheme}/epoch{epoch}/run{run}-n{rows}"

    def eval_dir(self) -> str:
        return self.eval_record("{model}", "{task}", "{scheme}", "{epoch}", "{kind}", "x").rsplit("/", 1)[0]

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
