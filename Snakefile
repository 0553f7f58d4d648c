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
include: "rules/general.smk"
include: "rules/multitask.smk"
include: "rules/analysis.smk"
include: "rules/report.smk"


# A run killed hard leaves Snakemake's lock behind: remove it when the run that took it is
# gone (ordermerge/workflow/runlock.py says how that is made safe), so that the same command resumes.
if workflow.is_main_process:
    _note = runlock.clear_stale_lock()
    if _note:
        logger.warning(f"ordermerge: {_note}")
# every rule is declared once, with its stage, script and cost model (ordermerge/workflow/stages.py)
_undeclared = check_rules(workflow.rules)
if _undeclared:
    raise WorkflowError("\n".join(_undeclared))
_started = time.time()


def _warm_start():
    """Start the warm worker for a local run's jobs (ordermerge/warm.py): not under a cluster
    executor (a job's processes must stay in its allocation), not for --touch, not with
    per-rule software environments (--use-conda, --sdm: the jobs' Python is not this one)."""
    if (config["warm_worker"] and workflow.local_exec and not workflow.touch
            and not workflow.deployment_settings.deployment_method):
        if warm.start(workflow.basedir):
            logger.info("ordermerge: jobs run forked from a warm worker (warm_worker: false "
                        "runs each as its own process)")
        else:
            logger.warning("ordermerge: the warm worker did not start; every job runs as its "
                           "own process (the same outputs, about 3 s more per job)")


onstart:
    runlock.record_owner()
    _warm_start()


onsuccess:
    warm.stop()


onerror:
    warm.stop()
    _runtime = lambda r: getattr(r.resources.get("runtime"), "value", r.resources.get("runtime"))
    for _line in runlock.slurm_failures(
        Path("results/logs/slurm").resolve(), _started,
        {r.name: (stage_of(r.name), _runtime(r)) for r in workflow.rules}):
        logger.error(f"ordermerge: {_line}")


rule all:
    input:
        P.all_targets(),
    default_target: True
