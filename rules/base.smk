# The shared base model: the tiny one is built and pretrained here; a pretrained one is saved
# in the configured dtype.


rule tokenizer:
    input:
        script("tokenizer.py"),
        lib("data/toy.py", "data/registry.py", "models.py", "utils.py"),
        train=expand("results/data/{task}/train.jsonl", task=TASKS),
    output:
        corpus="results/base/{model}/corpus.txt",
        corpus_prov="results/base/{model}/corpus.txt.prov.json",
        tokenizer=directory("results/base/{model}/tokenizer"),
    params:
        json=as_json({**config["model"]["tokenizer"], "seed": config["seed"]}),
    log:
        "results/logs/tokenizer/{model}.log",
    resources:
        **resources_of("base"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input[0]} --rule tokenizer --train {input.train} --corpus {output.corpus}"
        " --out-dir {output.tokenizer} --params {params.json:q} > {log} 2>&1"


def base_inputs(wildcards):
    if config["model"]["source"] == "tiny":
        return {"tokenizer": f"results/base/{wildcards.model}/tokenizer",
                "corpus": f"results/base/{wildcards.model}/corpus.txt"}
    return {}


def base_args(wildcards, input):
    if config["model"]["source"] == "tiny":
        return f"--tokenizer {input.tokenizer} --corpus {input.corpus}"
    return ""


rule base:
    input:
        script("base.py"),
        lib("models.py", "train.py", "utils.py"),
        unpack(base_inputs),
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
        "{PY} {input[0]} --rule base --threads {threads} {params.args} --out-dir {output}"
        " --params {params.json:q} > {log} 2>&1"
