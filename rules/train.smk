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
        samples=f"{RUN}/samples.csv",
        steps=f"{RUN}/steps.jsonl",
        summary=f"{RUN}/run.json",
        prov=[f"{RUN}/{name}.prov.json" for name in ("samples.csv", "steps.jsonl", "run.json")],
    params:
        json=lambda w: as_json(task_cfg(w)["train"]),
        out_dir=lambda w: run_dir(w.model, w.task, w.scheme, w.run),
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
