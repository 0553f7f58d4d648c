# Merges of the K sub-models at one epoch. One rule per method, each depending on its own
# source file, so editing one method's code or settings reruns only that method's merges.


MERGE_PARAMS = as_json({"weights": config["merge"]["weights"]})
MERGE_SHELL = ("python {input.script} --rule {params.rule} --threads {threads} --method-id {params.mid}"
               " {params.base} --out-dir {output} --params {params.json:q} {input.sub_models}"
               " > {log} 2>&1")


rule merge_average:
    input:
        script=script("merge.py"),
        lib=merge_sources("average"),
        sub_models=sub_models,
    output:
        directory("results/merged/{model}/{task}/{scheme}/epoch{epoch}/avg"),
    params:
        rule="merge_average",
        mid="avg",
        base="",
        json=MERGE_PARAMS,
    threads: res("merge", "cpus")
    log:
        "results/logs/merge/{model}/{task}/{scheme}/epoch{epoch}/avg.log",
    benchmark:
        "results/benchmarks/merge/{model}/{task}/{scheme}/epoch{epoch}/avg.tsv"
    resources:
        **resources_of("merge"),
    conda:
        "../envs/train.yaml"
    shell:
        MERGE_SHELL


rule merge_select:
    input:
        script=script("merge.py"),
        lib=merge_sources("select"),
        sub_models=sub_models,
    output:
        directory("results/merged/{model}/{task}/{scheme}/epoch{epoch}/select-s{seed}"),
    wildcard_constraints:
        seed=r"\d+",
    params:
        rule="merge_select",
        mid="select-s{seed}",
        base="",
        json=MERGE_PARAMS,
    threads: res("merge", "cpus")
    log:
        "results/logs/merge/{model}/{task}/{scheme}/epoch{epoch}/select-s{seed}.log",
    benchmark:
        "results/benchmarks/merge/{model}/{task}/{scheme}/epoch{epoch}/select-s{seed}.tsv"
    resources:
        **resources_of("merge"),
    conda:
        "../envs/train.yaml"
    shell:
        MERGE_SHELL


rule merge_resample:
    input:
        script=script("merge.py"),
        lib=merge_sources("resample"),
        sub_models=sub_models,
        base=start_model,
    output:
        directory("results/merged/{model}/{task}/{scheme}/epoch{epoch}/resample-n{rounds}-s{seed}"),
    wildcard_constraints:
        seed=r"\d+",
        rounds=r"\d+",
    params:
        rule="merge_resample",
        mid="resample-n{rounds}-s{seed}",
        base=lambda w, input: f"--base {input.base}",
        json=MERGE_PARAMS,
    threads: res("merge", "cpus")
    log:
        "results/logs/merge/{model}/{task}/{scheme}/epoch{epoch}/resample-n{rounds}-s{seed}.log",
    benchmark:
        "results/benchmarks/merge/{model}/{task}/{scheme}/epoch{epoch}/resample-n{rounds}-s{seed}.tsv"
    resources:
        **resources_of("merge"),
    conda:
        "../envs/train.yaml"
    shell:
        MERGE_SHELL
