"""Greedy evaluation of models (sub-models or merges) on a task's test split: one record per
--candidate, with one import, one judge and one test split for all of them."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.registry import get_task
from ordermerge.evaluate.run import evaluate_model, load_judge, write_evaluation
from ordermerge.provenance import now
from ordermerge.runner import log, parser, record, start
from ordermerge.utils import read_jsonl

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--candidate", nargs=3, action="append", required=True, metavar=("NAME", "MODEL", "OUT"),
               help="a model to evaluate: its name in the record, its directory, the record's path")
p.add_argument("--test", required=True, type=Path)
p.add_argument("--judge-model", type=Path, help="the local AlpacaEval judge's model directory")
args = p.parse_args()
t0 = start(args)  # threads first: the judge's and the models' float results depend on them
cfg, task, rows = args.params, get_task(args.task), read_jsonl(args.test)
judge = load_judge(task, cfg, args.judge_model)
for i, (name, model, out) in enumerate(args.candidate):
    t0 = t0 if i == 0 else now()
    rec = evaluate_model(task, model, rows, cfg, name=name, judge=judge)
    write_evaluation(out, rec)
    record(args, out, t0, [model, args.test] + ([args.judge_model] if args.judge_model else []))
    log(f"{args.task} {cfg['kind']}/{name} epoch {cfg['epoch']}: {rec['metric']} {rec['score']:.4f} "
        f"over {rec['n']}")
