# Prepared rows per task and split, and one data order per run.


rule prepare_data:
    input:
        script=script("prepare_data.py"),
        lib=lib("data/prepare.py", *TASK_SOURCES, "utils.py"),
    output:
        expand("results/data/{{task}}/{split}.jsonl", split=["train", "validation", "test"]),
        expand("results/data/{{task}}/{split}.jsonl.prov.json", split=["train", "validation", "test"]),
    params:
        json=lambda w: as_json({"data": task_cfg(w)["data"], "seed": config["seed"]}),
    threads: res("data", "cpus")
    log:
        "results/logs/prepare_data/{task}.log",
    resources:
        **resources_of("data"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule prepare_data --task {wildcards.task} --params {params.json:q}"
        " --out-dir results/data/{wildcards.task} > {log} 2>&1"


rule order:
    input:
        script=script("make_order.py"),
        lib=lib("data/orders.py", "utils.py"),
        train="results/data/{task}/train.jsonl",
    output:
        order="results/orders/{task}/{scheme}/run{run}.json",
        prov="results/orders/{task}/{scheme}/run{run}.json.prov.json",
    params:
        json=lambda w: as_json({"epochs": config["epochs"], "seed": config["seed"],
                                "batch_size": task_cfg(w)["train"]["batch_size"]}),
    threads: res("order", "cpus")
    log:
        "results/logs/order/{task}/{scheme}/run{run}.log",
    resources:
        **resources_of("order"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule order --task {wildcards.task} --scheme {wildcards.scheme}"
        " --run {wildcards.run} --train {input.train} --out {output.order}"
        " --params {params.json:q} > {log} 2>&1"
