"""One SFT run of the base model on one task, following one data order."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from ordermerge.data.registry import get_task
from ordermerge.models import load_model, stored_dtype
from ordermerge.runner import log, parser, start
from ordermerge.train import sft
from ordermerge.utils import read_jsonl

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--base", required=True, type=Path)
p.add_argument("--data-dir", required=True, type=Path)
p.add_argument("--order", required=True, type=Path)
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args)
cfg = args.params
order = json.loads(args.order.read_text())
save_dtype = stored_dtype(args.base)
# master weights in float32; checkpoints go back to the base's dtype
model, tokenizer = load_model(args.base, dtype=torch.float32)
train = args.data_dir / "train.jsonl"
validation = args.data_dir / "validation.jsonl"
summary = sft(model, tokenizer, train_rows=read_jsonl(train),
              validation_rows=read_jsonl(validation), task=get_task(args.task),
              order=order["epochs"], cfg=cfg, save_dtype=save_dtype, out_dir=args.out_dir,
              provenance={"rule": args.rule, "params": cfg,
                          "seeds": {"order_seed": order["seed"], "run": order["run"]},
                          "inputs": [args.base, train, validation, args.order]},
              log=log)
log(f"done: {summary['steps']} steps, {summary['tokens_per_s']:.0f} tokens/s, "
    f"final train loss {summary['final_train_loss']:.4f}")
