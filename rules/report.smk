# The paper's tables from the evaluation records: a rule per table of the registry
# (ordermerge/report/registry.py: its records, params, builder and caption) that this
# config asks for, named table{N}.
for _n in P.tables():

    rule:
        name:
            f"table{_n}"
        input:
            **P.script_inputs("table.py"),
            records=[path for _, path in P.table_records(_n)],
        output:
            csv=report(f"results/tables/table{_n}.csv", caption="captions/table.rst", category="Tables"),
            md=f"results/tables/table{_n}.md",
            tex=f"results/tables/table{_n}.tex",
            prov=[f"results/tables/table{_n}.{ext}.prov.json" for ext in ("csv", "md", "tex")],
        params:
            n=_n,
            json=P.table_params(_n),
            records=P.table_args(_n),
            caption=table_spec(_n).caption,
        threads: P.threads(f"table{_n}")
        log:
            f"results/logs/table{_n}.log",
        resources:
            **P.resources(f"table{_n}"),
        conda:
            "../envs/report.yaml"
        shell:
            "{PY} {input.script} --rule {rule} --table {params.n} --csv {output.csv} --md {output.md}"
            " --tex {output.tex} --params {params.json:q} {params.records} > {log} 2>&1"
