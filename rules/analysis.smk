# The paper's analysis beyond Table 1: per-sample losses of any model (Figures 1 and 3),
# validation-loss curves of the runs and of their merges at every saved step (Figure 4),
# the figures, Table 4 (shuffled vs fix-batch orders) and the cost table.

FIGURE_LIB = lib("report/figures.py", "report/stats.py", "scoring.py")


# A model's loss on each row of a split: the code of SFT's closing pass.
rule score:
    input:
        script=script("score.py"),
        lib=lib("scoring.py", "objectives.py", "train.py", "models.py", "encoder.py", *TASK_SOURCES),
        model=lambda w: candidate_model(w, w.name),
        rows="results/data/{task}/{split}.jsonl",
    output:
        losses="results/scores/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}/{split}.csv",
        prov="results/scores/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}/{split}.csv.prov.json",
    wildcard_constraints:
        name=rf"run\d+|{id_pattern()}",
    params:
        json=score_params,
    threads: res("evaluate", "cpus")
    log:
        "results/logs/score/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}/{split}.log",
    benchmark:
        "results/benchmarks/score/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}/{split}.tsv"
    resources:
        **resources_of("evaluate"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule score --threads {threads} --task {wildcards.task}"
        " --model {input.model} --rows {input.rows} --out {output.losses}"
        " --params {params.json:q} > {log} 2>&1"


# Validation loss at every saved point (epoch ends, train.save_steps): the K runs'
# checkpoints (method "single"), or their merge at each point with one method.
rule curve:
    input:
        unpack(curve_inputs),
    output:
        curve="results/curves/{model}/{task}/{scheme}/{method}.csv",
        prov="results/curves/{model}/{task}/{scheme}/{method}.csv.prov.json",
    wildcard_constraints:
        method=rf"single|{id_pattern()}",
    params:
        args=curve_args,
        json=lambda w: as_json(json.loads(score_params(w)) | (
            {} if w.method == "single" else json.loads(merge_params(w)))),
    threads: res("evaluate", "cpus")
    log:
        "results/logs/curve/{model}/{task}/{scheme}/{method}.log",
    benchmark:
        "results/benchmarks/curve/{model}/{task}/{scheme}/{method}.tsv"
    resources:
        **resources_of("evaluate"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule curve --threads {threads} --task {wildcards.task}"
        " --rows {input.rows} --out {output.curve} {params.args} --params {params.json:q} > {log} 2>&1"


def _figure_rule_args(n):
    return " ".join(f"{name}={path}" for name, path in figure_inputs(n))


if FIGURES:
    for _n, _caption in ((1, "figure1.rst"), (3, "figure3.rst"), (4, "figure4.rst")):

        rule:
            name:
                f"figure{_n}"
            input:
                script=script("figure.py"),
                lib=FIGURE_LIB,
                data=[path for _, path in figure_inputs(_n)],
            output:
                png=report(f"results/figures/figure{_n}.png", caption=f"captions/{_caption}",
                           category="Figures"),
                svg=f"results/figures/figure{_n}.svg",
                csv=f"results/figures/figure{_n}.csv",
                extra=[f"results/figures/figure1_rho.{e}" for e in ("csv", "md")] if _n == 1 else [],
                prov=[f"results/figures/figure{_n}{x}.prov.json" for x in
                      (".png", ".svg", ".csv") + (("_rho.csv", "_rho.md") if _n == 1 else ())],
            params:
                n=_n,
                args=_figure_rule_args(_n),
                json=as_json({k: FIGURES[k] for k in ("panels", "bins", "segments")}),
                anchor=f"run{FIGURES['anchor']}",
            threads: res("report", "cpus")
            log:
                f"results/logs/figure{_n}.log",
            resources:
                **resources_of("report"),
            conda:
                "../envs/report.yaml"
            shell:
                "{PY} {input.script} --rule figure{params.n} --figure {params.n}"
                " --stem results/figures/figure{params.n} --anchor {params.anchor}"
                " --params {params.json:q} {params.args} > {log} 2>&1"


rule table2:
    input:
        script=script("table.py"),
        lib=lib("report/tables.py", "report/stats.py", "merge/methods.py", *TASK_SOURCES),
        records=[path for _, path in TABLE2_RECORDS],
    output:
        csv=report("results/tables/table2.csv", caption="captions/table2.rst", category="Tables"),
        md="results/tables/table2.md",
        tex="results/tables/table2.tex",
        prov=expand("results/tables/table2.{ext}.prov.json", ext=["csv", "md", "tex"]),
    params:
        json=as_json({"epoch": REPORT_EPOCH, "scheme": SCHEMES[0], "stats": config["report"]["stats"],
                      "models": {m: MODELS[m]["spec"] for m in dict.fromkeys(m for m, _ in TABLE2_RECORDS)}}),
        records=" ".join(f"{m}={p}" for m, p in TABLE2_RECORDS),
    threads: res("report", "cpus")
    log:
        "results/logs/table2.log",
    resources:
        **resources_of("report"),
    conda:
        "../envs/report.yaml"
    shell:
        "{PY} {input.script} --rule table2 --table 2 --csv {output.csv} --md {output.md}"
        " --tex {output.tex} --params {params.json:q} {params.records} > {log} 2>&1"


rule table4:
    input:
        script=script("table.py"),
        lib=lib("report/tables.py", "report/stats.py", "merge/methods.py"),
        records=table4_records(),
    output:
        csv=report("results/tables/table4.csv", caption="captions/table4.rst", category="Tables"),
        md="results/tables/table4.md",
        tex="results/tables/table4.tex",
        prov=expand("results/tables/table4.{ext}.prov.json", ext=["csv", "md", "tex"]),
    params:
        json=as_json({"epoch": REPORT_EPOCH, "tasks": TABLE4_TASKS, "stats": config["report"]["stats"]}),
    threads: res("report", "cpus")
    log:
        "results/logs/table4.log",
    resources:
        **resources_of("report"),
    conda:
        "../envs/report.yaml"
    shell:
        "{PY} {input.script} --rule table4 --table 4 --csv {output.csv} --md {output.md}"
        " --tex {output.tex} --params {params.json:q} {input.records} > {log} 2>&1"


# CPU- and GPU-hours per rule group and per paper table, summed from the benchmark files
# of every job, and the SFT runs' padding efficiency from their run.json (its inputs are
# the other targets, so it runs last).
rule cost:
    input:
        script=script("cost.py"),
        lib=lib("report/cost.py", "report/tables.py", "warm.py"),
        after=cost_inputs(),
    output:
        csv=report("results/tables/cost.csv", caption="captions/cost.rst", category="Tables"),
        md="results/tables/cost.md",
        prov=expand("results/tables/cost.{ext}.prov.json", ext=["csv", "md"]),
    params:
        json=as_json({stage: {"cpus": res(stage, "cpus"), "gpus": res(stage, "gpus") or 0}
                      for stage in config["resources"]}),
    threads: res("report", "cpus")
    log:
        "results/logs/cost.log",
    resources:
        **resources_of("report"),
    conda:
        "../envs/report.yaml"
    shell:
        "{PY} {input.script} --rule cost --benchmarks results/benchmarks --sft results/sft"
        " --logs results/logs"
        " --csv {output.csv}"
        " --md {output.md} --params {params.json:q} > {log} 2>&1"
