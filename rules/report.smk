# Tables from the evaluation records.


rule table1:
    input:
        script=script("table.py"),
        lib=lib("report/tables.py", "report/stats.py", "merge/methods.py"),
        records=[r for t in TASKS for r in eval_records(t, SCHEMES[0], [REPORT_EPOCH])],
    output:
        csv=report("results/tables/table1.csv", caption="captions/table1.rst", category="Tables"),
        md="results/tables/table1.md",
        tex="results/tables/table1.tex",
        prov=expand("results/tables/table1.{ext}.prov.json", ext=["csv", "md", "tex"]),
    params:
        json=as_json({"epoch": REPORT_EPOCH, "scheme": SCHEMES[0], "models": {t: model_of(t) for t in TASKS},
                      "stats": config["report"]["stats"]}),
    threads: res("report", "cpus")
    log:
        "results/logs/table1.log",
    resources:
        **resources_of("report"),
    conda:
        "../envs/report.yaml"
    shell:
        "{PY} {input.script} --rule table1 --csv {output.csv} --md {output.md} --tex {output.tex}"
        " --params {params.json:q} {input.records} > {log} 2>&1"
