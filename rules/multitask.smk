# Multi-task merging (the paper's Table 3): per group, one single-task model per task
# (an SFT run of this workflow, or an external model), aligned to one vocabulary, merged
# by every configured method, each merge evaluated on every task of the group.


rule multitask_align:
    input:
        **P.script_inputs("multitask_align.py"),
        models=P.multitask_align_models,
    output:
        directory("results/multitask/{group}/aligned"),
    params:
        json=P.multitask_align_params,
    threads: P.threads("multitask_align")
    log:
        "results/logs/multitask/{group}/aligned.log",
    resources:
        **P.resources("multitask_align"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule multitask_align --group {wildcards.group} --out-dir {output}"
        " --params {params.json:q} > {log} 2>&1"


rule multitask_merge:
    input:
        script=P.script("merge.py"),
        lib=lambda w: P.merge_code(w.method),
        aligned="results/multitask/{group}/aligned",
    output:
        directory("results/multitask/{group}/{method}"),
    wildcard_constraints:
        method=id_pattern(),
    params:
        json=P.multitask_merge_params,
        entry=P.method_entry,
        args=P.multitask_merge_args,
    threads: P.threads("multitask_merge")
    log:
        "results/logs/multitask/{group}/{method}.log",
    benchmark:
        "results/benchmarks/multitask/{group}/{method}.tsv"
    resources:
        **P.resources("multitask_merge"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule multitask_merge --threads {threads} --method-id {wildcards.method}"
        " --out-dir {output} --params {params.json:q} {params.args} > {log} 2>&1"


# A task's single-task model in its group (an external model, aligned) on that task.
rule evaluate_multitask:
    input:
        unpack(P.judge_input),
        **P.script_inputs("evaluate.py"),
        model=P.multitask_model,
        test="results/data/{task}/test.jsonl",
    output:
        records=["results/eval/multitask/{group}/{task}/{name}.json"],
        prov=["results/eval/multitask/{group}/{task}/{name}.json.prov.json"],
    wildcard_constraints:
        name="single",
    params:
        json=P.multitask_eval_params,
        judge=P.judge_arg,
        candidates=lambda w, input, output: (f"--candidate {w.name} "
                                             f"{P.multitask_model_path(w, input)} {output.records[0]}"),
    threads: P.threads("evaluate_multitask")
    log:
        "results/logs/evaluate/multitask/{group}/{task}/{name}.log",
    benchmark:
        "results/benchmarks/evaluate/multitask/{group}/{task}/{name}.tsv"
    resources:
        **P.resources("evaluate_multitask"),
    conda:
        "../envs/evaluate.yaml"
    shell:
        EVAL_SHELL


# One merge of a group on every task of the group, in one job: a rule per group (its
# records, one per task, are the rule's outputs), named evaluate_multitask_<group>.
for _group, _g in P.groups.items():

    rule:
        name:
            P.multitask_eval_rule(_group)
        input:
            unpack(lambda w, group=_group: P.multitask_group_eval_inputs(group, w.name)),
            **P.script_inputs("evaluate.py"),
        output:
            records=[f"results/eval/multitask/{_group}/{t}/{{name}}.json" for t in _g["tasks"]],
            prov=[f"results/eval/multitask/{_group}/{t}/{{name}}.json.prov.json" for t in _g["tasks"]],
        wildcard_constraints:
            name=id_pattern(),
        params:
            json=lambda w, group=_group: P.group_eval_params(group, w.name),
            judge=P.judge_arg,
            tasks=lambda w, input, group=_group: " ".join(
                f"--task {t} --test {test}"
                for t, test in zip(P.groups[group]["tasks"], input.test, strict=True)),
            candidates=lambda w, input, output: " ".join(
                f"--candidate {w.name} {input.model} {rec}" for rec in output.records),
        threads: P.threads(P.multitask_eval_rule(_group))
        log:
            f"results/logs/evaluate/multitask/{_group}/{{name}}.log",
        benchmark:
            f"results/benchmarks/evaluate/multitask/{_group}/{{name}}.tsv"
        resources:
            **P.resources(P.multitask_eval_rule(_group)),
        conda:
            "../envs/evaluate.yaml"
        shell:
            "{PY} {input.script} --rule {rule} --threads {threads} {params.tasks}"
            " {params.candidates} {params.judge} --params {params.json:q} > {log} 2>&1"
