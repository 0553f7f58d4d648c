# The shared base model: the tiny one is built and pretrained here; a pretrained one is saved
# in the configured dtype.


rule tokenizer:
    input:
        script=script("tokenizer.py"),
        lib=lib("data/corpus.py", *TASK_SOURCES, "models.py", "utils.py"),
        data=expand("results/data/{task}/{split}.jsonl", task=TASKS,
                    split=["train", "validation", "test"]),
    output:
        corpus="results/base/{model}/corpus.txt",
        corpus_prov="results/base/{model}/corpus.txt.prov.json",
        tokenizer=directory("results/base/{model}/tokenizer"),
    params:
        json=as_json({**config["model"]["tokenizer"], "seed": config["seed"]}),
        data_dirs=lambda w, input: " ".join(dict.fromkeys(str(Path(p).parent) for p in input.data)),
    log:
        "results/logs/tokenizer/{model}.log",
    resources:
        **resources_of("base"),
    conda:
        "../envs/train.yaml"
    shell:
        "python {input.script} --rule tokenizer --data-dirs {params.data_dirs} --corpus {output.corpus}"
        " --out-dir {output.tokenizer} --params {params.json:q} > {log} 2>&1"


rule base:
    input:
        unpack(base_inputs),
        script=script("base.py"),
        lib=lib("models.py", "train.py", "utils.py"),
    output:
        directory("results/base/{model}/model"),
    params:
        json=as_json({k: config["model"][k] for k in ("source", "dtype", "tiny", "pretrain")}
                     | {"seed": config["seed"]}),
        args=base_args,
    threads: res("base", "cpus")
    log:
        "results/logs/base/{model}.log",
    benchmark:
        "results/benchmarks/base/{model}.tsv"
    resources:
        **resources_of("base"),
    conda:
        "../envs/train.yaml"
    shell:
        "python {input.script} --rule base --threads {threads} {params.args} --out-dir {output}"
        " --params {params.json:q} > {log} 2>&1"
