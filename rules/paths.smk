# Path helpers and the target list: every output path the rules' inputs name is built here,
# from the same templates the rules' outputs use.


def start_model(wildcards):
    """The model every SFT run of a task starts from, the base of its task vectors: the
    decoder base, or for an encoder task the encoder with the task's head
    (results/base/{encoder}/init/{task}: one head initialisation shared by all K runs)."""
    if REGISTRY[wildcards.task].family == "encoder":
        return f"results/base/{wildcards.model}/init/{wildcards.task}"
    return f"results/base/{wildcards.model}/model"


def run_dir(model, task, scheme, run):
    """One SFT run's directory: its epoch and step checkpoints, samples.csv, run.json."""
    return f"results/sft/{model}/{task}/{scheme}/run{run}"


# the sft rule's output directory, as a wildcard template
RUN = run_dir("{model}", "{task}", "{scheme}", "{run}")


def run_dirs(wildcards):
    """The K runs' directories of the wildcards' model, task and scheme."""
    return [run_dir(wildcards.model, wildcards.task, wildcards.scheme, r) for r in RUNS]


def sft_dir(model, task, scheme, run, epoch):
    return f"{run_dir(model, task, scheme, run)}/epoch{epoch}"


def merged_dir(model, task, scheme, epoch, mid):
    return f"results/merged/{model}/{task}/{scheme}/epoch{epoch}/{mid}"


def eval_record(model, task, scheme, epoch, kind, name):
    return f"results/eval/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}.json"


def eval_records(task, scheme, epochs):
    out = []
    for e in epochs:
        model = model_of(task)
        out += [eval_record(model, task, scheme, e, "sft", f"run{r}") for r in RUNS]
        out += [eval_record(model, task, scheme, e, "merged", m) for m in method_ids(task)]
    return out


def table_files(n):
    return [f"results/tables/table{n}.{ext}" for ext in ("csv", "md", "tex")]


def analysis_targets():
    """The tables beyond Table 1 and the figures this config asks for."""
    out = []
    if GROUPS:
        out += table_files(3)
    if TABLE2_RECORDS:
        out += table_files(2)
    if TABLE4_TASKS:
        out += table_files(4)
    if FIGURES:
        out += [f"results/figures/figure{n}.{ext}" for n in (1, 3, 4) for ext in ("png", "svg", "csv")]
        out += ["results/figures/figure1_rho.csv", "results/figures/figure1_rho.md"]
    return out


def all_targets():
    targets = table_files(1) + analysis_targets()
    if TASKS:
        targets += ["results/tables/cost.csv", "results/tables/cost.md"]
    for task in TASKS:
        for scheme in SCHEMES:
            targets += eval_records(task, scheme, MERGE_EPOCHS)
            targets += [f"{run_dir(model_of(task), task, scheme, r)}/samples.csv" for r in RUNS]
    return targets


def candidate_model(wildcards, name):
    """The checkpoint an evaluation record `name` (run{r} or a merge id) is of."""
    if wildcards.kind == "sft":
        run = name.removeprefix("run")
        return sft_dir(wildcards.model, wildcards.task, wildcards.scheme, run, wildcards.epoch)
    return merged_dir(wildcards.model, wildcards.task, wildcards.scheme, wildcards.epoch, name)


def single_record(group, task):
    """Table 3's single row for a task: the SFT run's own record, or the external model's."""
    g = GROUPS[group]
    if task in g["models"]:
        return f"results/eval/multitask/{group}/{task}/single.json"
    return eval_record(MODEL, task, SCHEMES[0], REPORT_EPOCH, "sft", f"run{g['run']}")


def multitask_model(wildcards):
    """The aligned single-task models' directory (the task's model is inside), or the merge."""
    if wildcards.name == "single":
        return f"results/multitask/{wildcards.group}/aligned"
    return f"results/multitask/{wildcards.group}/{wildcards.name}"


def fig_run_dir(r):
    return run_dir(FIG_MODEL, FIG_TASK, FIG_SCHEME, r)


def fig_score(kind, name):
    """A model's per-sample losses on the figure task's training rows (last epoch)."""
    return (f"results/scores/{FIG_MODEL}/{FIG_TASK}/{FIG_SCHEME}/epoch{EPOCHS[-1]}/{kind}/"
            f"{name}/train.csv")
