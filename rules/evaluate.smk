# Greedy evaluation of every sub-model and every merge on the task's test split.

EVALUATE_LIB = lib("evaluate/__init__.py", "evaluate/generate.py", "evaluate/run.py",
    "evaluate/choice.py", "evaluate/math_answers.py", "evaluate/text_answers.py",
    "evaluate/handlers.py", "evaluate/humaneval.py", "evaluate/sandbox.py",
    "evaluate/alpaca.py", "objectives.py", "scoring.py", *TASK_SOURCES, "models.py", "encoder.py",
    "train.py")


rule evaluate:
    input:
        unpack(judge_input),
        script=script("evaluate.py"),
        lib=EVALUATE_LIB,
        model=candidate_model,
        test="results/data/{task}/test.jsonl",
    output:
        record="results/eval/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}.json",
        prov="results/eval/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}.json.prov.json",
    wildcard_constraints:
        name=rf"run\d+|{id_pattern()}",
    params:
        json=eval_params,
        judge=judge_arg,
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
        "python {input.script} --rule evaluate --threads {threads} --task {wildcards.task}"
        " --model {input.model} --test {input.test} --out {output.record} {params.judge}"
        " --params {params.json:q} > {log} 2>&1"
