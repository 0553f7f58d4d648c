# Input functions and params of the rules: what each job reads, and the arguments and JSON
# params it gets.


def task_cfg(wildcards):
    return config["tasks"][wildcards.task]


def method_ids(task):
    """Every merge of one task's K runs: config merge.methods, seeded ones once per seed,
    resample's rounds from the task's resample_rounds."""
    return expand_methods(config["merge"]["methods"], SEEDS, rounds=config["tasks"][task]["resample_rounds"])


def spec(wildcards):
    """The model/encoder block of the {model} wildcard."""
    return MODELS[wildcards.model]["spec"]


def one_of(names):
    return "|".join(map(re.escape, names))


def base_inputs(wildcards):
    if spec(wildcards)["source"] == "tiny":
        return {"tokenizer": f"results/base/{wildcards.model}/tokenizer",
                "corpus": f"results/base/{wildcards.model}/corpus.txt"}
    return {}



def base_args(wildcards, input):
    if spec(wildcards)["source"] == "tiny":
        return f"--tokenizer {input.tokenizer} --corpus {input.corpus}"
    return ""



def sft_outputs():
    """Each epoch's checkpoint and the steps/ directory of step checkpoints; temp() when
    config sft.temporary_checkpoints says so (Snakemake deletes them once every merge and
    evaluation that reads them is done)."""
    dirs = [directory(sft_dir("{model}", "{task}", "{scheme}", "{run}", e)) for e in EPOCHS]
    dirs.append(directory(f"{RUN}/steps"))
    return [temp(d) for d in dirs] if config["sft"]["temporary_checkpoints"] else dirs



def sub_models(wildcards):
    return [sft_dir(wildcards.model, wildcards.task, wildcards.scheme, r, wildcards.epoch)
            for r in RUNS]



def merge_sources(mid):
    """The engine's files and the method's own (from the registry): editing one method's
    source reruns only its merges."""
    return lib(*(f"merge/{f}" for f in sources_of(mid)))


def merge_inputs(wildcards, mid=None):
    """A Table 1 merge (method id `mid`, default the {method} wildcard): the script, its
    sources, the K runs, and the base where the method needs one."""
    mid = mid or wildcards.method
    out = {"script": script("merge.py"), "lib": merge_sources(mid), "sub_models": sub_models(wildcards)}
    if merge_method(parse_method_id(mid)[0]).needs_base:
        out["base"] = start_model(wildcards)
    return out


def base_arg(wildcards, input):
    return f"--base {input.base}" if "base" in input.keys() else ""


def merge_params(wildcards, mid=None):
    """config merge.weights (length K, summing to 1) for the average and the selections;
    task-vector methods weight each run 1. `mid`: as merge_inputs."""
    m = merge_method(parse_method_id(mid or wildcards.method)[0])
    return as_json({"weights": config["merge"]["weights"] if m.weights != "task" else None})


# ---------------------------------------------------------------- multi-task (Table 3)
# a group set to null in a layered config file is removed
GROUPS = {name: g for name, g in config["multitask"]["groups"].items() if g is not None}


def group_ids(group):
    g = GROUPS[group]
    return expand_methods(g["methods"], g["seeds"] or SEEDS, rounds=1)


def single_task_model(group, task):
    """A task's single-task model in a group: the external model it names, else the
    configured SFT run at the report epoch."""
    g = GROUPS[group]
    if task in g["models"]:
        return g["models"][task]
    return sft_dir(MODEL, task, SCHEMES[0], g["run"], REPORT_EPOCH)


def group_members(group):
    """task -> the name of its model in the group's aligned/ directory: tasks naming the
    same model (WizardMath for GSM8K and MATH) share the first one's, and it is merged once."""
    seen, out = {}, {}
    for t in GROUPS[group]["tasks"]:
        out[t] = seen.setdefault(single_task_model(group, t), t)
    return out


def group_base(group):
    return GROUPS[group]["base"] or f"results/base/{MODEL}/model"


def group_merge_weights(group):
    """The merged models' weights (one per distinct model), from the per-task weights."""
    g = GROUPS[group]
    if g["weights"] is None:
        return None
    members = group_members(group)
    return [w for t, w in zip(g["tasks"], g["weights"]) if members[t] == t]


def multitask_align_inputs(wildcards):
    """Local single-task models and base (hub ids are resolved by the script)."""
    g = GROUPS[wildcards.group]
    local = [single_task_model(wildcards.group, t) for t in g["tasks"]]
    local.append(group_base(wildcards.group))
    return {"script": script("multitask_align.py"), "lib": lib("merge/align.py", "merge/st_io.py", "models.py"),
            "models": sorted({p for p in local if p.startswith("results/") or Path(p).exists()})}


def table3_records():
    """GROUP=PATH arguments and the paths, for every group's single and merged records."""
    pairs = []
    for group, g in GROUPS.items():
        for t in g["tasks"]:
            pairs.append((group, single_record(group, t)))
            pairs += [(group, f"results/eval/multitask/{group}/{t}/{mid}.json") for mid in group_ids(group)]
    return pairs


def multitask_model_path(wildcards, input):
    if wildcards.name == "single":
        return f"{input.model}/{group_members(wildcards.group)[wildcards.task]}"
    return input.model


def multitask_eval_rule(group):
    """The rule that evaluates one merge of `group` on every task of the group."""
    return f"{MULTITASK_EVAL_PREFIX}{group}"


def multitask_group_eval_inputs(group, name):
    """A group merge's evaluation on every task: the merge, each task's test split, and the
    local AlpacaEval judge where a task has one."""
    tasks = GROUPS[group]["tasks"]
    judges = {j for t in tasks for j in judge_input(Namespace(task=t)).values()}
    if len(judges) > 1:
        raise WorkflowError(f"multitask group {group!r}: its tasks name different local judges "
                            f"{sorted(judges)}; one evaluation job takes one")
    return {"script": script("evaluate.py"), "lib": EVALUATE_LIB,
            "model": f"results/multitask/{group}/{name}",
            "test": [f"results/data/{t}/test.jsonl" for t in tasks],
            **({"judge": judges.pop()} if judges else {})}


def multitask_eval_cfg(group, task, name):
    """The params of a group's record on `task` for model `name` (a merge id, or single)."""
    return config["tasks"][task]["evaluate"] | {
        "kind": "sft" if name == "single" else "merged", "epoch": REPORT_EPOCH,
        "scheme": SCHEMES[0], "model": f"multitask-{group}",
        "max_length": config["tasks"][task]["train"]["max_length"]}


def multitask_eval_params(wildcards):
    return as_json(multitask_eval_cfg(wildcards.group, wildcards.task, wildcards.name))



def judge_input(wildcards):
    """The local AlpacaEval judge's model, for tasks scored by alpaca_eval with judge: local."""
    ev = config["tasks"][wildcards.task]["evaluate"]
    if REGISTRY[wildcards.task].evaluator != "alpaca_eval" or ev["judge"] != "local":
        return {}
    return {"judge": ev["judge_model"] or f"results/base/{MODEL}/model"}


def judge_arg(wildcards, input):
    return f"--judge-model {input.judge}" if "judge" in input.keys() else ""


def eval_params(wildcards):
    """An evaluation job's params: the task's evaluate section and what labels its records
    (each model's name comes with its --candidate)."""
    return as_json(task_cfg(wildcards)["evaluate"] | {
        "kind": wildcards.kind, "epoch": int(wildcards.epoch), "scheme": wildcards.scheme,
        "model": wildcards.model, "max_length": task_cfg(wildcards)["train"]["max_length"]})


def candidate_args(wildcards, input, output):
    """--candidate NAME MODEL RECORD for each model of an evaluation job (the name is the
    record's file name)."""
    return " ".join(f"--candidate {Path(rec).name.removesuffix('.json')} {model} {rec}"
                    for model, rec in zip(input.models, output.records, strict=True))


def sft_launcher(wildcards, threads):
    """The warm worker's client (PY), or accelerate launch with the configured config file
    and process count."""
    s = config["sft"]
    if s["accelerate_config"] is None:
        return PY
    return (f"accelerate launch --config_file {s['accelerate_config']}"
            f" --num_processes {s['num_processes']}")


# ---------------------------------------------------------------- Tables 2 and 4, the figures
def _table2_records():
    """(model, record path) of Table 2: every model (encoders first, then decoders, as the
    paper prints them) on its tasks among table2.tasks: its K runs and the table2.methods
    merges, at the report epoch."""
    t2 = config["table2"]
    if t2 is None:
        return []
    wanted = t2["tasks"] or [t for t in TASKS if t in TABLE2_TASKS]
    out = []
    for m in ENCODERS + DECODERS:
        for t in [t for t in MODELS[m]["tasks"] if t in wanted]:
            ids = expand_methods(t2["methods"], SEEDS, rounds=config["tasks"][t]["resample_rounds"])
            out += [(m, eval_record(m, t, SCHEMES[0], REPORT_EPOCH, "sft", f"run{r}")) for r in RUNS]
            out += [(m, eval_record(m, t, SCHEMES[0], REPORT_EPOCH, "merged", i)) for i in ids]
    return out if len({m for m, _ in out}) >= 2 else []


TABLE2_RECORDS = _table2_records()



def table4_records():
    """Every Table 4 task's runs and merges (table4.methods) under both order schemes, at the
    report epoch."""
    out = []
    for t in TABLE4_TASKS:
        ids = expand_methods(TABLE4["methods"], SEEDS, rounds=config["tasks"][t]["resample_rounds"])
        for scheme in ("shuffle", "fix-batch"):
            out += [eval_record(model_of(t), t, scheme, REPORT_EPOCH, "sft", f"run{r}") for r in RUNS]
            out += [eval_record(model_of(t), t, scheme, REPORT_EPOCH, "merged", m) for m in ids]
    return out


FIGURES = config["figures"] if TASKS else None
if FIGURES:
    FIG_TASK = FIGURES["task"] or DECODER_TASKS[0]
    FIG_MODEL = model_of(FIG_TASK)
    FIG_SCHEME = SCHEMES[0]
    FIG_IDS = expand_methods(FIGURES["methods"], SEEDS[:1],
                             rounds=config["tasks"][FIG_TASK]["resample_rounds"])


def figure_inputs(n):
    """NAME=PATH pairs of a figure's inputs."""
    samples = [(f"run{r}", f"{fig_run_dir(r)}/samples.csv") for r in RUNS]
    merged = [(m, fig_score("merged", m)) for m in FIG_IDS]
    if n == 1:
        return samples + merged
    if n == 3:
        return samples[FIGURES["anchor"]:FIGURES["anchor"] + 1] + \
            [(f"run{r}", fig_score("sft", f"run{r}")) for r in RUNS] + merged
    curves = f"results/curves/{FIG_MODEL}/{FIG_TASK}/{FIG_SCHEME}"
    return [("single", f"{curves}/single.csv")] + [(m, f"{curves}/{m}.csv") for m in FIG_IDS]


def curve_runs(wildcards):
    """The K runs' checkpoints (every epoch's and the steps/ directory) and run.json."""
    return [f"{run}/{x}" for run in run_dirs(wildcards)
            for x in [f"epoch{e}" for e in EPOCHS] + ["steps", "run.json"]]


def curve_inputs(wildcards):
    out = {"script": script("curve.py"), "lib": lib("scoring.py", "objectives.py", "models.py",
                                                      "train.py", "encoder.py", *TASK_SOURCES),
           "runs": curve_runs(wildcards), "rows": f"results/data/{wildcards.task}/validation.jsonl"}
    if wildcards.method != "single":
        out["merge_lib"] = merge_sources(wildcards.method)
        if merge_method(parse_method_id(wildcards.method)[0]).needs_base:
            out["base"] = start_model(wildcards)
    return out


def curve_args(wildcards, input):
    extra = "" if wildcards.method == "single" else f"--method-id {wildcards.method}"
    return f"{extra} {base_arg(wildcards, input)} {' '.join(run_dirs(wildcards))}"


def score_params(wildcards):
    tr = task_cfg(wildcards)["train"]
    return as_json({"max_length": tr["max_length"], "batch_size": tr["micro_batch_size"]})


def cost_inputs():
    """Everything else the default target makes: the cost table is summed last."""
    return table_files(1) + analysis_targets()
