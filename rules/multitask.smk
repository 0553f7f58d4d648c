# Multi-task merging (the paper's Table 3): per group, one single-task model per task
# (an SFT run of this workflow, or an external model), aligned to one vocabulary, merged
# by every configured method, each merge evaluated on every task of the group.


rule multitask_align:
    input:
        unpack(multitask_align_inputs),
    output:
        directory("results/multitask/{group}/aligned"),
    params:
        json=lambda w: as_json({"models": {m: single_task_model(w.group, m)
                                           for m in dict.fromkeys(group_members(w.group).values())},
                                "base": group_base(w.group)}),
    threads: res("merge", "cpus")
    log:
        "results/logs/multitask/{group}/aligned.log",
    resources:
        **resources_of("merge"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule multitask_align --group {wildcards.group} --out-dir {output}"
        " --params {params.json:q} > {log} 2>&1"


rule multitask_merge:
    input:
        script=script("merge.py"),
        lib=lambda w: merge_sources(w.method),
        aligned="results/multitask/{group}/aligned",
    output:
        directory("results/multitask/{group}/{method}"),
    wildcard_constraints:
        method=id_pattern(),
    params:
        base=lambda w, input: (f"--base {input.aligned}/base"
                               if merge_method(parse_method_id(w.method)[0]).needs_base else ""),
        json=lambda w: as_json({"weights": group_merge_weights(w.group), "group": w.group}),
        models=lambda w, input: " ".join(f"{input.aligned}/{m}"
                                         for m in dict.fromkeys(group_members(w.group).values())),
    threads: res("merge", "cpus")
    log:
        "results/logs/multitask/{group}/{method}.log",
    benchmark:
        "results/benchmarks/multitask/{group}/{method}.tsv"
    resources:
        **resources_of("merge"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule multitask_merge --threads {threads} --method-id {wildcards.method}"
        " {params.base} --out-dir {output} --params {params.json:q} {params.models} > {log} 2>&1"


# A task's single-task model in its group (an external model, aligned) on that task.
rule evaluate_multitask:
    input:
        unpack(judge_input),
        script=script("evaluate.py"),
        lib=EVALUATE_LIB,
        model=multitask_model,
        test="results/data/{task}/test.jsonl",
    output:
        records=["results/eval/multitask/{group}/{task}/{name}.json"],
        prov=["results/eval/multitask/{group}/{task}/{name}.json.prov.json"],
    wildcard_constraints:
        name="single",
    params:
        json=multitask_eval_params,
        judge=judge_arg,
        candidates=lambda w, input, output: (f"--candidate {w.name} "
                                             f"{multitask_model_path(w, input)} {output.records[0]}"),
    threads: res("evaluate", "cpus")
    log:
        "results/logs/evaluate/multitask/{group}/{task}/{name}.log",
    benchmark:
        "results/benchmarks/evaluate/multitask/{group}/{task}/{name}.tsv"
    resources:
        **resources_of("evaluate"),
    conda:
        "../envs/evaluate.yaml"
    shell:
        EVAL_SHELL


# One merge of a group on every task of the group, in one job: a rule per group (its
# records, one per task, are the rule's outputs), named evaluate_multitask_<group>.
for _group, _g in GROUPS.items():

    rule:
        name:
            multitask_eval_rule(_group)
        input:
            unpack(lambda w, group=_group: multitask_group_eval_inputs(group, w.name)),
        output:
            records=[f"results/eval/multitask/{_group}/{t}/{{name}}.json" for t in _g["tasks"]],
            prov=[f"results/eval/multitask/{_group}/{t}/{{name}}.json.prov.json" for t in _g["tasks"]],
        wildcard_constraints:
            name=id_pattern(),
        params:
            json=lambda w, group=_group: as_json({"tasks": {
                t: multitask_eval_cfg(group, t, w.name) for t in GROUPS[group]["tasks"]}}),
            judge=judge_arg,
            tasks=lambda w, input, group=_group: " ".join(
                f"--task {t} --test {test}"
                for t, test in zip(GROUPS[group]["tasks"], input.test, strict=True)),
            candidates=lambda w, input, output: " ".join(
                f"--candidate {w.name} {input.model} {rec}" for rec in output.records),
        threads: res("evaluate", "cpus")
        log:
            f"results/logs/evaluate/multitask/{_group}/{{name}}.log",
        benchmark:
            f"results/benchmarks/evaluate/multitask/{_group}/{{name}}.tsv"
        resources:
            **resources_of("evaluate"),
        conda:
            "../envs/evaluate.yaml"
        shell:
            "{PY} {input.script} --rule {rule} --threads {threads} {params.tasks}"
            " {params.candidates} {params.judge} --params {params.json:q} > {log} 2>&1"


rule table3:
    input:
        script=script("table.py"),
        lib=lib("report/tables.py", "report/stats.py", "merge/methods.py"),
        records=[path for _, path in table3_records()],
    output:
        csv=report("results/tables/table3.csv", caption="captions/table3.rst", category="Tables"),
        md="results/tables/table3.md",
        tex="results/tables/table3.tex",
        prov=expand("results/tables/table3.{ext}.prov.json", ext=["csv", "md", "tex"]),
    params:
        json=as_json({"groups": GROUPS, "epoch": REPORT_EPOCH, "scheme": SCHEMES[0],
                      "stats": config["report"]["stats"]}),
        records=" ".join(f"{g}={p}" for g, p in table3_records()),
    threads: res("report", "cpus")
    log:
        "results/logs/table3.log",
    resources:
        **resources_of("report"),
    conda:
        "../envs/report.yaml"
    shell:
        "{PY} {input.script} --rule table3 --table 3 --csv {output.csv} --md {output.md}"
        " --tex {output.tex}"
        " --params {params.json:q} {params.records} > {log} 2>&1"
