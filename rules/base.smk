# The shared base model: the tiny one is built and pretrained here; a pretrained one is saved
# in the configured dtype.


rule tokenizer:
    input:
        **P.script_inputs("tokenizer.py"),
        data=P.tokenizer_data(),
    wildcard_constraints:
        model=one_of(P.decoders),
    output:
        corpus="results/base/{model}/corpus.txt",
        corpus_prov="results/base/{model}/corpus.txt.prov.json",
        tokenizer=directory("results/base/{model}/tokenizer"),
    params:
        json=lambda w: as_json({**P.spec(w)["tokenizer"], "seed": config["seed"]}),
        data_dirs=lambda w, input: " ".join(dict.fromkeys(str(Path(p).parent) for p in input.data)),
    threads: P.threads("tokenizer")
    log:
        "results/logs/tokenizer/{model}.log",
    resources:
        **P.resources("tokenizer"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule tokenizer --data-dirs {params.data_dirs} --corpus {output.corpus}"
        " --out-dir {output.tokenizer} --params {params.json:q} > {log} 2>&1"


rule base:
    input:
        unpack(P.base_inputs),
        **P.script_inputs("base.py"),
    wildcard_constraints:
        model=one_of(P.decoders),
    output:
        directory("results/base/{model}/model"),
    params:
        json=lambda w: as_json({k: P.spec(w)[k] for k in ("source", "dtype", "tiny", "pretrain")}
                               | {"seed": config["seed"]}),
        args=P.base_args,
    threads: P.threads("base")
    log:
        "results/logs/base/{model}.log",
    benchmark:
        "results/benchmarks/base/{model}.tsv"
    resources:
        **P.resources("base"),
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
        **P.script_inputs("encoder_base.py"),
        data=[P.data(t, "train") for t in P.encoder_tasks],
    wildcard_constraints:
        model=one_of(P.encoders),
    output:
        directory("results/base/{model}/model"),
    params:
        json=lambda w: as_json(P.spec(w) | {"seed": config["seed"]}),
    threads: P.threads("encoder_base")
    log:
        "results/logs/base/{model}.log",
    benchmark:
        "results/benchmarks/base/{model}.tsv"
    resources:
        **P.resources("encoder_base"),
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
        **P.script_inputs("encoder_init.py"),
        base="results/base/{model}/model",
    wildcard_constraints:
        model=one_of(P.encoders),
    output:
        directory("results/base/{model}/init/{task}"),
    params:
        json=lambda w: as_json({"seed": config["seed"], "dtype": P.spec(w)["dtype"]}),
    threads: P.threads("encoder_init")
    log:
        "results/logs/base/{model}/init-{task}.log",
    resources:
        **P.resources("encoder_init"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule encoder_init --task {wildcards.task} --base {input.base}"
        " --out-dir {output} --params {params.json:q} > {log} 2>&1"
