"""Greedy evaluation of one model (a sub-model or a merge) on a task's test split."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from ordermerge.data.registry import get_task
from ordermerge.evaluate.run import evaluate_rows
from ordermerge.models import load_model
from ordermerge.provenance import write_record
from ordermerge.scoring import load_for_task
from ordermerge.runner import log, parser, start
from ordermerge.utils import atomic_file, read_jsonl

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--model", required=True, type=Path)
p.add_argument("--test", required=True, type=Path)
p.add_argument("--out", required=True, type=Path)
p.add_argument("--judge-model", type=Path, help="the local AlpacaEval judge's model directory")
args = p.parse_args()
t0 = start(args)
cfg = args.params
task = get_task(args.task)
if task.family == "encoder":
    from ordermerge.evaluate.encoder_eval import evaluate_encoder
    model, tokenizer = load_for_task(task, args.model)
    record = evaluate_encoder(model, tokenizer, task, read_jsonl(args.test),
                              max_length=cfg["max_length"], batch_size=cfg["batch_size"])
else:
    judge = None
    if task.evaluator == "alpaca_eval":
        from ordermerge.evaluate.alpaca import check_judge, lm_judge
        if cfg["judge"] == "local":
            if args.judge_model is None:
                raise SystemExit("evaluate: the local AlpacaEval judge needs --judge-model")
            judge = lm_judge(*load_model(args.judge_model, dtype=torch.float32))
        else:
            check_judge(cfg["judge"])  # before any generation work
    model, tokenizer = load_for_task(task, args.model)
    if torch.cuda.is_available():  # generation in bf16 on a GPU (fp32 on the CPU)
        model = model.to("cuda", torch.bfloat16)
    record = evaluate_rows(model, tokenizer, task, read_jsonl(args.test),
                           max_new_tokens=cfg["max_new_tokens"], batch_size=cfg["batch_size"],
                           choice_scoring=cfg["choice_scoring"], judge=judge,
                           annotators_config="alpaca_eval_gpt4" if cfg["judge"] == "local" else cfg["judge"],
                           name=f"{cfg['kind']}-{cfg['name']}")
record.update({k: cfg[k] for k in ("kind", "name", "epoch", "scheme", "model")},
              model_path=str(args.model))
with atomic_file(args.out) as fh:
    json.dump(record, fh, indent=1, sort_keys=True)
write_record(args.out, rule=args.rule, params=cfg, seeds={},
             inputs=[args.model, args.test] + ([args.judge_model] if args.judge_model else []), start=t0)
log(f"{args.task} {cfg['kind']}/{cfg['name']} epoch {cfg['epoch']}: "
    f"{record['metric']} {record['score']:.4f} over {record['n']}")
