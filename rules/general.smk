# Every Table 1 model on the general benchmarks of config general_eval, through
# lm-evaluation-harness's Python API (ordermerge/general_eval.py; Table 5): one record per
# model and benchmark, with every item's result. Grouped as the evaluation jobs are: the K
# runs of a (model, task, scheme, epoch) in `general_eval_runs`, every seed of one merge
# method in `general_eval_seeds`, one merge in `general_eval`, the base model in
# `general_eval_base`: editing one merge method reruns only its own evaluations.

GENERAL_SHELL = ("{PY} {input.script} --rule {rule} --threads {threads} {params.candidates}"
                 " --params {params.json:q} > {log} 2>&1")

if P.general is not None:

    rule general_eval:
        input:
            unpack(P.general_inputs(lambda w: [P.candidate_model(w, w.name)])),
            **P.script_inputs("general_eval.py"),
        output:
            **P.general_outputs(["{name}"]),
        wildcard_constraints:
            kind="merged",
            name=id_pattern(),
        params:
            json=P.general_params,
            candidates=P.general_candidates,
        threads: P.threads("general_eval")
        log:
            "results/logs/general_eval/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}.log",
        benchmark:
            "results/benchmarks/general_eval/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}.tsv"
        resources:
            **P.resources("general_eval"),
        conda:
            "../envs/evaluate.yaml"
        shell:
            GENERAL_SHELL

    use rule general_eval as general_eval_runs with:
        input:
            unpack(P.general_inputs(lambda w: [P.candidate_model(w, f"run{r}") for r in P.runs])),
            **P.script_inputs("general_eval.py"),
        output:
            **P.general_outputs([f"run{r}" for r in P.runs]),
        wildcard_constraints:
            kind="sft",
        log:
            "results/logs/general_eval/{model}/{task}/{scheme}/epoch{epoch}/{kind}/runs.log",
        benchmark:
            "results/benchmarks/general_eval/{model}/{task}/{scheme}/epoch{epoch}/{kind}/runs.tsv"

    use rule general_eval as general_eval_seeds with:
        input:
            unpack(P.general_inputs(lambda w: [P.candidate_model(w, f"{w.method}-s{s}") for s in P.seeds])),
            **P.script_inputs("general_eval.py"),
        output:
            **P.general_outputs([f"{{method}}-s{s}" for s in P.seeds]),
        wildcard_constraints:
            kind="merged",
            method=P.seeded_rows_pattern(),
        log:
            "results/logs/general_eval/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{method}-seeds.log",
        benchmark:
            "results/benchmarks/general_eval/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{method}-seeds.tsv"

    use rule general_eval as general_eval_base with:
        input:
            unpack(P.general_inputs(lambda w: [f"results/base/{w.model}/model"])),
            **P.script_inputs("general_eval.py"),
        output:
            **P.general_outputs([], base=True),
        log:
            "results/logs/general_eval/{model}/base.log",
        benchmark:
            "results/benchmarks/general_eval/{model}/base.tsv"

    # every seed of a method in one job; a seed outside merge.seeds (named in the config) alone
    ruleorder: general_eval_seeds > general_eval
