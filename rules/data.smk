# Prepared rows per task and split, and one data order per run.


rule prepare_data:
    input:
        **P.script_inputs("prepare_data.py"),
    output:
        [P.data("{task}", s) for s in SPLITS],
        [f"{P.data('{task}', s)}.prov.json" for s in SPLITS],
    params:
        json=P.prepare_params,
    threads: P.threads("prepare_data")
    log:
        "results/logs/prepare_data/{task}.log",
    resources:
        **P.resources("prepare_data"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule prepare_data --task {wildcards.task} --params {params.json:q}"
        " --out-dir results/data/{wildcards.task} > {log} 2>&1"


rule order:
    input:
        **P.script_inputs("make_order.py"),
        train=P.data("{task}", "train"),
    output:
        order="results/orders/{task}/{scheme}/run{run}.json",
        prov="results/orders/{task}/{scheme}/run{run}.json.prov.json",
    params:
        json=P.order_params,
    threads: P.threads("order")
    log:
        "results/logs/order/{task}/{scheme}/run{run}.log",
    resources:
        **P.resources("order"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule order --task {wildcards.task} --scheme {wildcards.scheme}"
        " --run {wildcards.run} --train {input.train} --out {output.order}"
        " --params {params.json:q} > {log} 2>&1"
