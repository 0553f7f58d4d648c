# One SFT run per (task, order scheme, run): a checkpoint per epoch (and at the configured
# steps), the ids of every optimizer step, and a per-sample loss log. A killed run resumes
# from its last checkpoint's state (results/sft/.../run{r}/resume/, not an output:
# Snakemake deletes a failed job's outputs before running it again).


rule sft:
    input:
        script=script("sft.py"),
        lib=lib("sft.py", "objectives.py", "encoder.py", "train.py", "models.py", *TASK_SOURCES,
                "utils.py"),
        base=start_model,
        data=expand("results/data/{{task}}/{split}.jsonl", split=["train", "validation"]),
        order="results/orders/{task}/{scheme}/run{run}.json",
    output:
        checkpoints=sft_outputs(),
        samples="results/sft/{model}/{task}/{scheme}/run{run}/samples.csv",
        steps="results/sft/{model}/{task}/{scheme}/run{run}/steps.jsonl",
        summary="results/sft/{model}/{task}/{scheme}/run{run}/run.json",
        prov=expand("results/sft/{{model}}/{{task}}/{{scheme}}/run{{run}}/{name}.prov.json",
                    name=["samples.csv", "steps.jsonl", "run.json"]),
    params:
        json=lambda w: as_json(task_cfg(w)["train"]),
        out_dir=lambda w: f"results/sft/{w.model}/{w.task}/{w.scheme}/run{w.run}",
        launcher=sft_launcher,
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
        "{params.launcher} {input.script} --rule sft --threads {threads} --task {wildcards.task}"
        " --base {input.base} --data-dir results/data/{wildcards.task} --order {input.order}"
        " --out-dir {params.out_dir} --params {params.json:q} > {log} 2>&1"
