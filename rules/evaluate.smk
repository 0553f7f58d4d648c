# Greedy evaluation of every sub-model and every merge on the task's test split. One job
# evaluates several models after one import, one test split and one judge: the K sub-models
# of a (model, task, scheme, epoch) in `evaluate_runs`, every seed of one merge method in
# `evaluate_seeds`; `evaluate` takes one merge (an unseeded method, or a seed named in the
# config). Each model still gets its own record and provenance record, and a merge method's
# evaluations stay in jobs of their own: editing one method reruns only its evaluations.

EVAL_SHELL = ("{PY} {input.script} --rule {rule} --threads {threads} --task {wildcards.task}"
              " {params.candidates} --test {input.test} {params.judge} --params {params.json:q}"
              " > {log} 2>&1")


rule evaluate:
    input:
        unpack(P.eval_inputs(lambda w: [P.candidate_model(w, w.name)])),
        **P.script_inputs("evaluate.py"),
    output:
        **P.eval_outputs(["{name}"]),
    wildcard_constraints:
        kind="merged",
        name=id_pattern(),
    params:
        json=P.eval_params,
        judge=P.judge_arg,
        candidates=P.candidate_args,
    threads: P.threads("evaluate")
    log:
        "results/logs/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}.tsv"
    resources:
        **P.resources("evaluate"),
    conda:
        "../envs/evaluate.yaml"
    shell:
        EVAL_SHELL


use rule evaluate as evaluate_runs with:
    input:
        unpack(P.eval_inputs(lambda w: [P.candidate_model(w, f"run{r}") for r in P.runs])),
        **P.script_inputs("evaluate.py"),
    output:
        **P.eval_outputs([f"run{r}" for r in P.runs]),
    wildcard_constraints:
        kind="sft",
    log:
        "results/logs/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/runs.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/runs.tsv"


use rule evaluate as evaluate_seeds with:
    input:
        unpack(P.eval_inputs(lambda w: [P.candidate_model(w, f"{w.method}-s{s}") for s in P.seeds])),
        **P.script_inputs("evaluate.py"),
    output:
        **P.eval_outputs([f"{{method}}-s{s}" for s in P.seeds]),
    wildcard_constraints:
        kind="merged",
        method=P.seeded_rows_pattern(),
    log:
        "results/logs/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{method}-seeds.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{method}-seeds.tsv"


# every seed of a method in one job; a seed outside merge.seeds (named in the config) alone
ruleorder: evaluate_seeds > evaluate


# The ensemble of the K runs (merge.ensemble): their averaged next-token distributions,
# evaluated as one model (ordermerge/evaluate/ensemble.py): not a merge, the bound Table 1
# reads the merges against.
use rule evaluate as evaluate_ensemble with:
    input:
        unpack(P.eval_inputs(lambda w: [P.sft_dir(w.model, w.task, w.scheme, r, w.epoch) for r in P.runs])),
        **P.script_inputs("evaluate.py"),
    output:
        **P.eval_outputs(["runs"]),
    wildcard_constraints:
        kind="ensemble",
    params:
        json=P.eval_params,
        judge=P.judge_arg,
        candidates=P.ensemble_args,
    log:
        "results/logs/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/runs.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{task}/{scheme}/epoch{epoch}/{kind}/runs.tsv"


# The K runs on the task's validation split, as the test split's evaluations are made: what
# greedy soup (ordermerge/merge/greedy_soup.py) orders the runs by.
rule validate_runs:
    input:
        unpack(lambda w: {**P.judge_input(w), "test": P.data(w.task, "validation"),
                          "models": [P.sft_dir(w.model, w.task, w.scheme, r, w.epoch) for r in P.runs]}),
        **P.script_inputs("evaluate.py"),
    output:
        **P.validation_outputs(),
    params:
        json=P.validation_params,
        judge=P.judge_arg,
        candidates=P.candidate_args,
    threads: P.threads("validate_runs")
    log:
        "results/logs/validate_runs/{model}/{task}/{scheme}/epoch{epoch}/runs.log",
    benchmark:
        "results/benchmarks/validate_runs/{model}/{task}/{scheme}/epoch{epoch}/runs.tsv"
    resources:
        **P.resources("validate_runs"),
    conda:
        "../envs/evaluate.yaml"
    shell:
        EVAL_SHELL
