"""Validation loss at every saved point of the K runs (epoch ends and train.save_steps):
each run's own checkpoint, or (with --method-id) the merge of the K runs' checkpoints taken
at the same point. The data of Figure 4 (ordermerge.curves.curve)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.registry import get_task
from ordermerge.runner import log, parser, record, start
from ordermerge.curves import curve, write_curve
from ordermerge.utils import read_jsonl

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--rows", required=True, type=Path, help="the validation rows (jsonl)")
p.add_argument("--method-id", help="merge the runs at each point with this method")
p.add_argument("--base", type=Path, help="the runs' start model (task-vector methods)")
p.add_argument("--out", required=True, type=Path)
p.add_argument("runs", nargs="+", type=Path, help="the K SFT run directories")
args = p.parse_args()
t0 = start(args)
points, used = curve(get_task(args.task), read_jsonl(args.rows), args.runs, args.params,
                     args.method_id, args.base, scratch=args.out.parent, log=log)
write_curve(args.out, points)
record(args, args.out, t0, [*used, args.rows, *([args.base] if args.base else [])])
