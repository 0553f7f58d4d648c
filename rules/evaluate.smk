# Greedy evaluation of every sub-model and every merge on the task's test split. One job
# evaluates several models after one import, one test split and one judge: the K sub-models
# of a (model, task, scheme, epoch) in `evaluate_runs`, every seed of one merge method in
# `evaluate_seeds`; `evaluate` takes one merge (an unseeded method, or a seed named in the
# config). Each model still gets its own record and provenance record, and a merge method's
# evaluations stay in jobs of their own: editing one method reruns only its evaluations.

EVALUATE_LIB = lib("evaluate/__init__.py", "evaluate/generate.py", "evaluate/run.py",
    "evaluate/choice.py", "evaluate/math_answers.py", "evaluate/text_answers.py",
    "evaluate/handlers.py", "evaluate/humaneval.py", "evaluate/sandbox.py",
    "evaluate/alpaca.py", "objectives.py", "scoring.py", *TASK_SOURCES, "models.py", "encoder.py",
    "train.py")
EVAL_DIR = eval_record("{model}", "{task}", "{scheme}", "{epoch}", "{kind}", "x").rsplit("/", 1)[0]
EVAL_SHELL = ("{PY} {input.script} --rule {rule} --threads {threads} --task {wildcards.task}"
              " {params.candidates} --test {input.test} {params.judge} --params {params.json:q}"
              " > {log} 2>&1")


def eval_inputs(models):
    """An evaluation job's inputs: the script and library, `models(wildcards)` (the
    checkpoints it evaluates), the task's test split and the local judge where it has one."""
    def inputs(w):
        return {**judge_input(w), "script": script("evaluate.py"), "lib": EVALUATE_LIB,
                "models": models(w), "test": f"results/data/{w.task}/test.jsonl"}
    return inputs


def eval_outputs(names):
    """The records of `names` (wildcard templates) in one evaluation directory, and their
    provenance records."""
    records = [f"{EVAL_DIR}/{n}.json" for n in names]
    return {"records": records, "prov": [f"{r}.prov.json" for r in records]}


rule evaluate:
    input:
        unpack(eval_inputs(lambda w: [candidate_model(w, w.name)])),
    output:
        **eval_outputs(["{name}"]),
    wildcard_constraints:
        kind="merged",
        name=id_pattern(),
    params:
        json=eval_params,
        judge=judge_arg,
        candidates=candidate_args,
    threads: res("evaluate", "cpus")
    log:
        "results/logs/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}.tsv"
    resources:
        **resources_of("evaluate"),
    conda:
        "../envs/evaluate.yaml"
    shell:
        EVAL_SHELL


use rule evaluate as evaluate_runs with:
    input:
        unpack(eval_inputs(lambda w: [candidate_model(w, f"run{r}") for r in RUNS])),
    output:
        **eval_outputs([f"run{r}" for r in RUNS]),
    wildcard_constraints:
        kind="sft",
    log:
        "results/logs/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/runs.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/runs.tsv"


use rule evaluate as evaluate_seeds with:
    input:
        unpack(eval_inputs(lambda w: [candidate_model(w, f"{w.method}-s{s}") for s in SEEDS])),
    output:
        **eval_outputs([f"{{method}}-s{s}" for s in SEEDS]),
    wildcard_constraints:
        kind="merged",
        method=seeded_row_pattern(),
    log:
        "results/logs/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{method}-seeds.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{method}-seeds.tsv"


# every seed of a method in one job; a seed outside merge.seeds (named in the config) alone
ruleorder: evaluate_seeds > evaluate
