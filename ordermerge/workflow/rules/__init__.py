"""The input functions and params of the rules of ``rules/*.smk``, one module per stage:
data and base models, SFT and merges, evaluation, multi-task merges, and the report (tables,
scores, curves, figures). Input functions take Snakemake's ``wildcards`` (anything with the
wildcard names as attributes)."""
