"""The diagonal Fisher information of one SFT checkpoint over the first --rows rows of its
task's training split (ordermerge/fisher_info.py), for Fisher merging: a directory holding
model.safetensors (float32, the checkpoint's tensor names) and fisher.json."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.registry import get_task
from ordermerge.fisher_info import fisher_of_checkpoint, run_meta, write_run_data
from ordermerge.runner import log, parser, record, start
from ordermerge.utils import atomic_dir, read_jsonl

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--model", required=True, type=Path, help="the checkpoint directory")
p.add_argument("--train", required=True, type=Path, help="the task's prepared training split")
p.add_argument("--rows", required=True, type=int)
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args)
task = get_task(args.task)
fisher, ids = fisher_of_checkpoint(task, args.model, read_jsonl(args.train), args.rows,
                                   args.params["max_length"])
with atomic_dir(args.out_dir) as tmp:
    write_run_data(tmp, fisher, run_meta(task, args.model, args.train, args.rows, ids))
    record(args, tmp, t0, [args.model, args.train], final=args.out_dir)
total = sum(float(t.sum()) for t in fisher.values())
log(f"fisher of {args.model} over {args.rows} rows: {len(fisher)} tensors, sum {total:.4g}")
