# ordermerge: fine-tune one base model on K data orders, merge the K runs, evaluate, tabulate.
# The default config is the embedded tiny suite; config/paper.yaml is the paper's grid.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/base.smk"
include: "rules/train.smk"
include: "rules/merge.smk"
include: "rules/evaluate.smk"
include: "rules/multitask.smk"
include: "rules/analysis.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
