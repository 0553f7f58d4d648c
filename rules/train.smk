# One SFT run per (task, order scheme, run): a checkpoint per epoch (and at the configured
# steps), the ids of every optimizer step, and each sample's loss when a step trained on it
# (samples.csv; its loss after training is the score rule's, so that editing scoring code
# never retrains). A killed run resumes from its last checkpoint's state
# (results/sft/.../run{r}/resume/, not an output: Snakemake deletes a failed job's outputs
# before running it again).


RUN = P.run_dir("{model}", "{task}", "{scheme}", "{run}")


rule sft:
    input:
        **P.script_inputs("sft.py"),
        base=P.start_model,
        data=[P.data("{task}", s) for s in ("train", "validation")],
        order="results/orders/{task}/{scheme}/run{run}.json",
    output:
        checkpoints=[temp(d) if config["sft"]["temporary_checkpoints"] else d
                     for d in map(directory, P.sft_output_dirs())],
        samples=f"{RUN}/samples.csv",
        steps=f"{RUN}/steps.jsonl",
        summary=f"{RUN}/run.json",
        prov=[f"{RUN}/{name}.prov.json" for name in ("samples.csv", "steps.jsonl", "run.json")],
    params:
        json=lambda w: as_json(P.train_cfg(w)),
        out_dir=lambda w: P.run_dir(w.model, w.task, w.scheme, w.run),
        launcher=P.sft_launcher,
    threads: P.threads("sft")
    log:
        "results/logs/sft/{model}/{task}/{scheme}/run{run}.log",
    benchmark:
        "results/benchmarks/sft/{model}/{task}/{scheme}/run{run}.tsv"
    resources:
        **P.resources("sft"),
    conda:
        "../envs/train.yaml"
    shell:
        "{params.launcher} {input.script} --rule sft --threads {threads} --task {wildcards.task}"
        " --base {input.base} --data-dir results/data/{wildcards.task} --order {input.order}"
        " --out-dir {params.out_dir} --params {params.json:q} > {log} 2>&1"
