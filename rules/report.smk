# Tables from the evaluation records.


rule table1:
    input:
        **P.script_inputs("table.py"),
        records=P.table1_records(),
    output:
        csv=report("results/tables/table1.csv", caption="captions/table1.rst", category="Tables"),
        md="results/tables/table1.md",
        tex="results/tables/table1.tex",
        prov=expand("results/tables/table1.{ext}.prov.json", ext=["csv", "md", "tex"]),
    params:
        json=P.table_params(1),
    threads: P.threads("table1")
    log:
        "results/logs/table1.log",
    resources:
        **P.resources("table1"),
    conda:
        "../envs/report.yaml"
    shell:
        "{PY} {input.script} --rule table1 --csv {output.csv} --md {output.md} --tex {output.tex}"
        " --params {params.json:q} {input.records} > {log} 2>&1"
