"""Per-sample losses of one model on a task's split (any checkpoint, scored as SFT validates):
the data of Figures 1 and 3."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.registry import get_task
from ordermerge.provenance import write_record
from ordermerge.runner import log, parser, start
from ordermerge.scoring import score_rows, write_losses
from ordermerge.utils import read_jsonl

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--model", required=True, type=Path)
p.add_argument("--rows", required=True, type=Path, help="the split's prepared rows (jsonl)")
p.add_argument("--out", required=True, type=Path)
args = p.parse_args()
t0 = start(args)
losses = score_rows(get_task(args.task), args.model, read_jsonl(args.rows),
                    max_length=args.params["max_length"], batch_size=args.params["batch_size"])
write_losses(args.out, losses)
write_record(args.out, rule=args.rule, params=args.params, seeds={}, inputs=[args.model, args.rows],
             start=t0)
log(f"{args.model}: mean loss {sum(losses.values()) / max(len(losses), 1):.4f} over {len(losses)} rows")
