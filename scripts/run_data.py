"""A per-run statistic of one SFT checkpoint over the first --rows rows of its task's
training split, for a data-aware merge, chosen by --rule: `diagonal_fisher` (Fisher merging,
ordermerge/fisher_info.py: float32 tensors named as the checkpoint's, fisher.json) or
`input_gram` (RegMean, ordermerge/gram_info.py: a float32 [in, in] Gram per linear weight,
gram.json). A directory holding model.safetensors and the meta file."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.registry import get_task
from ordermerge.fisher_info import fisher_of_checkpoint, run_meta, write_run_data
from ordermerge.gram_info import grams_of_checkpoint
from ordermerge.runner import log, parser, record, start
from ordermerge.utils import atomic_dir, read_jsonl

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--model", required=True, type=Path, help="the checkpoint directory")
p.add_argument("--train", required=True, type=Path, help="the task's prepared training split")
p.add_argument("--rows", required=True, type=int)
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
if args.rule not in ("diagonal_fisher", "input_gram"):
    p.error(f"--rule {args.rule!r}: diagonal_fisher or input_gram")
t0 = start(args)
task = get_task(args.task)
train = read_jsonl(args.train)
max_length = args.params["max_length"]
if args.rule == "diagonal_fisher":
    tensors, ids = fisher_of_checkpoint(task, args.model, train, args.rows, max_length)
    meta, meta_name = run_meta(task, args.model, args.train, args.rows, ids), "fisher.json"
    what = f"{len(tensors)} tensors, sum {sum(float(t.sum()) for t in tensors.values()):.4g}"
else:
    tensors, ids, tokens = grams_of_checkpoint(task, args.model, train, args.rows, max_length)
    meta = run_meta(task, args.model, args.train, args.rows, ids, tokens=tokens)
    meta_name, what = "gram.json", f"{len(tensors)} linear layers, {tokens} tokens"
with atomic_dir(args.out_dir) as tmp:
    write_run_data(tmp, tensors, meta, meta_name)
    record(args, tmp, t0, [args.model, args.train], final=args.out_dir)
log(f"{args.rule} of {args.model} over {args.rows} rows: {what}")
