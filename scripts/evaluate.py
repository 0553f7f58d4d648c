"""Greedy evaluation of models (sub-models or merges) on a task's test split: one record per
--candidate, with one import, one judge and one test split for all of them. Several --task
(a multi-task merge on each task of its group): the i-th --candidate on the i-th task, with
--params {"tasks": {task: params}}. --ensemble NAME OUT MODEL...: one record of the models'
ensemble (evaluate/ensemble.py: their averaged distributions)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.evaluate.run import evaluation_jobs, evaluate_model, load_judge, write_evaluation
from ordermerge.evaluate.backends import Sessions
from ordermerge.provenance import now
from ordermerge.runner import log, parser, record, start

p = parser(__doc__)
p.add_argument("--task", action="append", required=True)
p.add_argument("--candidate", nargs=3, action="append", default=[], metavar=("NAME", "MODEL", "OUT"),
               help="a model to evaluate: its name in the record, its directory, the record's path")
p.add_argument("--ensemble", nargs="+", metavar="NAME OUT MODEL",
               help="the ensemble of the MODELs (two or more): its name in the record, the "
                    "record's path, the checkpoint directories")
p.add_argument("--test", action="append", required=True, type=Path, help="each --task's test split")
p.add_argument("--judge-model", type=Path, help="the local AlpacaEval judge's model directory")
args = p.parse_args()
if args.ensemble is not None:
    if len(args.ensemble) < 4:
        p.error("--ensemble takes NAME OUT and at least two MODELs")
    name, out, *models = args.ensemble
    args.candidate.append((name, models, out))
if not args.candidate:
    p.error("give --candidate or --ensemble")
t0 = start(args)  # threads first: the judge's and the models' float results depend on them
# one session per generation backend serves every model (vLLM's worker starts at the first
# generation, if any)
with Sessions(threads=args.threads) as sessions:
    for task, test, rows, cfg, candidates in evaluation_jobs(args.task, args.test, args.candidate,
                                                             args.params):
        judge = load_judge(task, cfg, args.judge_model)
        for name, model, out in candidates:
            rec = evaluate_model(task, model, rows, cfg, name=name, judge=judge, sessions=sessions)
            write_evaluation(out, rec)
            models = model if isinstance(model, list) else [model]
            record(args, out, t0, [*models, test] + ([args.judge_model] if args.judge_model else []))
            last = sessions.take_last()
            how = f" (vllm: engine {last['load']}, {last['load_s']:.1f} s; generation " \
                  f"{last['generate_s']:.1f} s)" if last else ""
            log(f"{task.name} {cfg['kind']}/{name} epoch {cfg['epoch']}: {rec['metric']} "
                f"{rec['score']:.4f} over {rec['n']}{how}")
            t0 = now()
