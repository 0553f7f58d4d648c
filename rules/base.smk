# The shared base model: the tiny one is built and pretrained here; a pretrained one is saved
# in the configured dtype.


rule tokenizer:
    input:
        script=script("tokenizer.py"),
        lib=lib("data/corpus.py", *TASK_SOURCES, "models.py", "utils.py"),
        data=expand("results/data/{task}/{split}.jsonl", task=DECODER_TASKS,
                    split=["train", "validation", "test"]),
    wildcard_constraints:
        model=one_of(DECODERS),
    output:
        corpus="results/base/{model}/corpus.txt",
        corpus_prov="results/base/{model}/corpus.txt.prov.json",
        tokenizer=directory("results/base/{model}/tokenizer"),
    params:
        json=lambda w: as_json({**spec(w)["tokenizer"], "seed": config["seed"]}),
        data_dirs=lambda w, input: " ".join(dict.fromkeys(str(Path(p).parent) for p in input.data)),
    threads: res("base", "cpus")
    log:
        "results/logs/tokenizer/{model}.log",
    resources:
        **resources_of("base"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule tokenizer --data-dirs {params.data_dirs} --corpus {output.corpus}"
        " --out-dir {output.tokenizer} --params {params.json:q} > {log} 2>&1"


rule base:
    input:
        unpack(base_inputs),
        script=script("base.py"),
        lib=lib("models.py", "train.py", "utils.py"),
    wildcard_constraints:
        model=one_of(DECODERS),
    output:
        directory("results/base/{model}/model"),
    params:
        json=lambda w: as_json({k: spec(w)[k] for k in ("source", "dtype", "tiny", "pretrain")}
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
        "{PY} {input.script} --rule base --threads {threads} {params.args} --out-dir {output}"
        " --params {params.json:q} > {log} 2>&1"


# The encoder of the encoder tasks (Table 2): the tiny one gets a WordPiece tokenizer and a
# short masked-LM pretraining on those tasks' training text; a pretrained one is saved in
# the configured dtype.
rule encoder_base:
    input:
        script=script("encoder_base.py"),
        lib=lib("encoder.py", "models.py", "train.py", *TASK_SOURCES, "utils.py"),
        data=expand("results/data/{task}/train.jsonl", task=ENCODER_TASKS),
    wildcard_constraints:
        model=one_of(ENCODERS),
    output:
        directory("results/base/{model}/model"),
    params:
        json=lambda w: as_json(spec(w) | {"seed": config["seed"]}),
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
        "{PY} {input.script} --rule encoder_base --threads {threads} --train {input.data}"
        " --out-dir {output} --params {params.json:q} > {log} 2>&1"


# An encoder task's starting point: the encoder with the task's head (classification or
# span extraction), initialised once from a seed of the task, so that the K runs share it
# and resample's task vectors have it as their base.
rule encoder_init:
    input:
        script=script("encoder_init.py"),
        lib=lib("encoder.py", "models.py", *TASK_SOURCES, "utils.py"),
        base="results/base/{model}/model",
    wildcard_constraints:
        model=one_of(ENCODERS),
    output:
        directory("results/base/{model}/init/{task}"),
    params:
        json=lambda w: as_json({"seed": config["seed"], "dtype": spec(w)["dtype"]}),
    threads: res("base", "cpus")
    log:
        "results/logs/base/{model}/init-{task}.log",
    resources:
        **resources_of("base"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule encoder_init --task {wildcards.task} --base {input.base}"
        " --out-dir {output} --params {params.json:q} > {log} 2>&1"
