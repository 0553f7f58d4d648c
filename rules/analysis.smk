# The paper's analysis beyond the tables: per-sample losses of any model (Figures 1 and 3),
# validation-loss curves of the runs and of their merges at every saved step (Figure 4),
# the figures and the cost table.

# A model's loss on each row of a split (a sub-model's after training, a merge's): SFT's
# validation code (objectives.sample_losses) on any checkpoint.
rule score:
    input:
        **P.script_inputs("score.py"),
        model=lambda w: P.candidate_model(w, w.name),
        rows=P.data("{task}", "{split}"),
    output:
        losses=P.score_file("{model}", "{task}", "{scheme}", "{epoch}", "{kind}", "{name}", "{split}"),
        prov=P.score_file("{model}", "{task}", "{scheme}", "{epoch}", "{kind}", "{name}", "{split}")
        + ".prov.json",
    wildcard_constraints:
        name=rf"run\d+|{id_pattern()}",
    params:
        json=P.score_params,
    threads: P.threads("score")
    log:
        "results/logs/score/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}/{split}.log",
    benchmark:
        "results/benchmarks/score/{model}/{task}/{scheme}/epoch{epoch}/{kind}/{name}/{split}.tsv"
    resources:
        **P.resources("score"),
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
        unpack(P.curve_inputs),
        script=P.script("curve.py"),
    output:
        curve="results/curves/{model}/{task}/{scheme}/{method}.csv",
        prov="results/curves/{model}/{task}/{scheme}/{method}.csv.prov.json",
    wildcard_constraints:
        method=rf"single|{id_pattern()}",
    params:
        args=P.curve_args,
        json=P.curve_params,
        entry=P.method_entry,
    threads: P.threads("curve")
    log:
        "results/logs/curve/{model}/{task}/{scheme}/{method}.log",
    benchmark:
        "results/benchmarks/curve/{model}/{task}/{scheme}/{method}.tsv"
    resources:
        **P.resources("curve"),
    conda:
        "../envs/train.yaml"
    shell:
        "{PY} {input.script} --rule curve --threads {threads} --task {wildcards.task}"
        " --rows {input.rows} --out {output.curve} {params.args} --params {params.json:q} > {log} 2>&1"


if P.figures:
    for _n, _caption in ((1, "figure1.rst"), (3, "figure3.rst"), (4, "figure4.rst")):

        rule:
            name:
                f"figure{_n}"
            input:
                **P.script_inputs("figure.py"),
                data=[path for _, path in P.figure_inputs(_n)],
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
                args=" ".join(f"{name}={path}" for name, path in P.figure_inputs(_n)),
                json=P.figure_params(),
                anchor=f"run{P.figures['anchor']}",
            threads: P.threads(f"figure{_n}")
            log:
                f"results/logs/figure{_n}.log",
            resources:
                **P.resources(f"figure{_n}"),
            conda:
                "../envs/report.yaml"
            shell:
                "{PY} {input.script} --rule figure{params.n} --figure {params.n}"
                " --stem results/figures/figure{params.n} --anchor {params.anchor}"
                " --params {params.json:q} {params.args} > {log} 2>&1"


# CPU- and GPU-hours per rule group and per paper table, summed from the benchmark files
# of every job, and the SFT runs' padding efficiency from their run.json (its inputs are
# the other targets, so it runs last).
rule cost:
    input:
        **P.script_inputs("cost.py"),
        after=P.analysis_targets(),
    output:
        csv=report("results/tables/cost.csv", caption="captions/cost.rst", category="Tables"),
        md="results/tables/cost.md",
        prov=expand("results/tables/cost.{ext}.prov.json", ext=["csv", "md"]),
    params:
        json=P.cost_params(),
    threads: P.threads("cost")
    log:
        "results/logs/cost.log",
    resources:
        **P.resources("cost"),
    conda:
        "../envs/report.yaml"
    shell:
        "{PY} {input.script} --rule cost --benchmarks results/benchmarks --sft results/sft"
        " --logs results/logs"
        " --csv {output.csv}"
        " --md {output.md} --params {params.json:q} > {log} 2>&1"
