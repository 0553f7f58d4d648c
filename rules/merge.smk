# Merges of the K sub-models at one epoch: one rule for every method of the registry
# (ordermerge/merge/methods.py). The {method} wildcard is a method id carrying its settings,
# and each job's inputs name its own method's source files, so editing one method's code
# or settings reruns only that method's merges. `merge_seeds` makes every seed of one
# seeded method in one job (one import, one read of the K runs' headers); `merge` makes one.


rule merge:
    input:
        unpack(P.merge_inputs),
        script=P.script("merge.py"),
    output:
        directory("results/merged/{model}/{task}/{scheme}/epoch{epoch}/{method}"),
    wildcard_constraints:
        method=id_pattern(),
    params:
        base=P.base_arg,
        json=P.merge_params,
        entry=P.method_entry,
        targets=lambda w, output: f"--method-id {w.method} --out-dir {output}",
    threads: P.threads("merge")
    log:
        "results/logs/merge/{model}/{task}/{scheme}/epoch{epoch}/{method}.log",
    benchmark:
        "results/benchmarks/merge/{model}/{task}/{scheme}/epoch{epoch}/{method}.tsv"
    resources:
        **P.resources("merge"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule {rule} --threads {threads} {params.targets} {params.base}"
        " --params {params.json:q} {input.sub_models} > {log} 2>&1"


use rule merge as merge_seeds with:
    input:
        unpack(lambda w: P.merge_inputs(w, f"{w.method}-s{P.seeds[0]}")),
        script=P.script("merge.py"),
    output:
        [directory(f"results/merged/{{model}}/{{task}}/{{scheme}}/epoch{{epoch}}/{{method}}-s{s}")
         for s in P.seeds],
    wildcard_constraints:
        method=P.seeded_rows_pattern(),
    params:
        base=P.base_arg,
        json=lambda w: P.merge_params(w, f"{w.method}-s{P.seeds[0]}"),
        entry=lambda w: P.method_entry(w, f"{w.method}-s{P.seeds[0]}"),
        targets=lambda w, output: " ".join(f"--method-id {w.method}-s{s} --out-dir {out}"
                                           for s, out in zip(P.seeds, output, strict=True)),
    log:
        "results/logs/merge/{model}/{task}/{scheme}/epoch{epoch}/{method}-seeds.log",
    benchmark:
        "results/benchmarks/merge/{model}/{task}/{scheme}/epoch{epoch}/{method}-seeds.tsv"


# every seed of a method in one job; a seed outside merge.seeds (named in the config) alone
ruleorder: merge_seeds > merge


# Greedy soup merges and evaluates candidate soups on the validation split, on the
# evaluation stage's resources (a GPU at paper scale), with its own script.
rule merge_soup:
    input:
        unpack(lambda w: P.merge_inputs(w, "greedy-soup")),
        script=P.script("greedy_soup.py"),
    output:
        directory("results/merged/{model}/{task}/{scheme}/epoch{epoch}/greedy-soup"),
    params:
        base=P.base_arg,
        json=lambda w: P.merge_params(w, "greedy-soup"),
        entry=lambda w: P.method_entry(w, "greedy-soup"),
        targets=lambda w, output: f"--method-id greedy-soup --out-dir {output}",
    threads: P.threads("merge_soup")
    log:
        "results/logs/merge_soup/{model}/{task}/{scheme}/epoch{epoch}/greedy-soup.log",
    benchmark:
        "results/benchmarks/merge_soup/{model}/{task}/{scheme}/epoch{epoch}/greedy-soup.tsv"
    resources:
        **P.resources("merge_soup"),
    conda:
        "../envs/evaluate.yaml"
    shell:
        "{PY} {input.script} --rule {rule} --threads {threads} {params.targets} {params.base}"
        " --params {params.json:q} {input.sub_models} > {log} 2>&1"


ruleorder: merge_soup > merge


# Fisher merging's data: one run's diagonal Fisher at one epoch over the first {rows}
# training rows (ordermerge/fisher_info.py), computed once and read by every Fisher merge
# of that run's epoch with that many rows.
rule diagonal_fisher:
    input:
        model=lambda w: P.sft_dir(w.model, w.task, w.scheme, w.run, w.epoch),
        train=lambda w: P.data(w.task, "train"),
        **P.script_inputs("run_data.py"),
    output:
        # float32, the model's size (27 GB for a 7B): deleted with the temporary checkpoints
        (temp if config["sft"]["temporary_checkpoints"] else lambda d: d)(
            directory("results/fisher/{model}/{task}/{scheme}/epoch{epoch}/run{run}-n{rows}")),
    wildcard_constraints:
        run=r"\d+",
        rows=r"\d+",
    params:
        json=P.fisher_params,
    threads: P.threads("diagonal_fisher")
    log:
        "results/logs/diagonal_fisher/{model}/{task}/{scheme}/epoch{epoch}/run{run}-n{rows}.log",
    benchmark:
        "results/benchmarks/diagonal_fisher/{model}/{task}/{scheme}/epoch{epoch}/run{run}-n{rows}.tsv"
    resources:
        **P.resources("diagonal_fisher"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule {rule} --threads {threads} --task {wildcards.task}"
        " --model {input.model} --train {input.train} --rows {wildcards.rows}"
        " --out-dir {output} --params {params.json:q} > {log} 2>&1"


# RegMean's data: one run's linear-layer input Grams at one epoch over the first {rows}
# training rows (ordermerge/gram_info.py), computed once and read by every RegMean merge of
# that run's epoch with that many rows.
rule input_gram:
    input:
        model=lambda w: P.sft_dir(w.model, w.task, w.scheme, w.run, w.epoch),
        train=lambda w: P.data(w.task, "train"),
        **P.script_inputs("run_data.py"),
    output:
        # float32, in x in per linear weight (28.7 GB for a Llama-2-7b: 32 layers of six
        # 4096^2 and one 11008^2): deleted with the temporary checkpoints
        (temp if config["sft"]["temporary_checkpoints"] else lambda d: d)(
            directory("results/gram/{model}/{task}/{scheme}/epoch{epoch}/run{run}-n{rows}")),
    wildcard_constraints:
        run=r"\d+",
        rows=r"\d+",
    params:
        json=P.fisher_params,
    threads: P.threads("input_gram")
    log:
        "results/logs/input_gram/{model}/{task}/{scheme}/epoch{epoch}/run{run}-n{rows}.log",
    benchmark:
        "results/benchmarks/input_gram/{model}/{task}/{scheme}/epoch{epoch}/run{run}-n{rows}.tsv"
    resources:
        **P.resources("input_gram"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule {rule} --threads {threads} --task {wildcards.task}"
        " --model {input.model} --train {input.train} --rows {wildcards.rows}"
        " --out-dir {output} --params {params.json:q} > {log} 2>&1"
