# One SFT run per (task, order scheme, run): a checkpoint per epoch and a per-sample loss log.


rule sft:
    input:
        script=script("sft.py"),
        lib=lib("train.py", "models.py", "data/registry.py", "utils.py"),
        base="results/base/{model}/model",
        data=expand("results/data/{{task}}/{split}.jsonl", split=["train", "validation"]),
        order="results/orders/{task}/{scheme}/run{run}.json",
    output:
        checkpoints=sft_outputs(),
        samples="results/sft/{model}/{task}/{scheme}/run{run}/samples.csv",
        summary="results/sft/{model}/{task}/{scheme}/run{run}/run.json",
        prov=expand("results/sft/{{model}}/{{task}}/{{scheme}}/run{{run}}/{name}.prov.json",
                    name=["samples.csv", "run.json"]),
    params:
        json=lambda w: as_json(task_cfg(w)["train"]),
        out_dir=lambda w: f"results/sft/{w.model}/{w.task}/{w.scheme}/run{w.run}",
    threads: res("sft", "cpus")
    log:
        "results/logs/sft/{model}/{task}/{scheme}/run{run}.log",
    benchmark:
        "results/benchmarks/sft/{model}/{task}/{scheme}/run{run}.tsv"
    resources:
        **resources_of("sft"),
    conda:
        "../envs/train.yaml"
    shell:
        "python {input.script} --rule sft --threads {threads} --task {wildcards.task}"
        " --base {input.base} --data-dir results/data/{wildcards.task} --order {input.order}"
        " --out-dir {params.out_dir} --params {params.json:q} > {log} 2>&1"
