"""Greedy evaluation of one model (a sub-model or a merge) on a task's test split."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.registry import get_task
from ordermerge.evaluate.run import evaluate_model, write_evaluation
from ordermerge.runner import log, parser, record, start
from ordermerge.utils import read_jsonl

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--model", required=True, type=Path)
p.add_argument("--test", required=True, type=Path)
p.add_argument("--out", required=True, type=Path)
p.add_argument("--judge-model", type=Path, help="the local AlpacaEval judge's model directory")
args = p.parse_args()
t0, cfg = start(args), args.params
rec = evaluate_model(get_task(args.task), args.model, read_jsonl(args.test), cfg, args.judge_model)
write_evaluation(args.out, rec)
record(args, args.out, t0, [args.model, args.test] + ([args.judge_model] if args.judge_model else []))
log(f"{args.task} {cfg['kind']}/{cfg['name']} epoch {cfg['epoch']}: "
    f"{rec['metric']} {rec['score']:.4f} over {rec['n']}")
