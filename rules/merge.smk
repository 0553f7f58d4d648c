# Merges of the K sub-models at one epoch: one rule for every method of the registry
# (ordermerge/merge/methods.py). The {method} wildcard is a method id carrying its settings,
# and each job's inputs name its own method's source files, so editing one method's code
# or settings reruns only that method's merges.


rule merge:
    input:
        unpack(merge_inputs),
    output:
        directory("results/merged/{model}/{task}/{scheme}/epoch{epoch}/{method}"),
    wildcard_constraints:
        method=id_pattern(),
    params:
        base=base_arg,
        json=merge_params,
    threads: res("merge", "cpus")
    log:
        "results/logs/merge/{model}/{task}/{scheme}/epoch{epoch}/{method}.log",
    benchmark:
        "results/benchmarks/merge/{model}/{task}/{scheme}/epoch{epoch}/{method}.tsv"
    resources:
        **resources_of("merge"),
    conda:
        "../envs/train.yaml"
    shell:
        "python {input.script} --rule merge --threads {threads} --method-id {wildcards.method}"
        " {params.base} --out-dir {output} --params {params.json:q} {input.sub_models} > {log} 2>&1"
