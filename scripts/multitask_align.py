"""Align a multi-task group's single-task models and base to one vocabulary (MergeLM's way)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.merge.align import align_group
from ordermerge.runner import log, parser, record, start
from ordermerge.utils import atomic_dir

p = parser(__doc__)
p.add_argument("--group", required=True)
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args, models=False)
with atomic_dir(args.out_dir) as tmp:
    rec, inputs = align_group(args.group, args.params, tmp)
    record(args, tmp, t0, inputs, final=args.out_dir)
log(f"{args.group}: {rec['target_rows']} vocabulary rows; extended {rec['extended'] or 'none'}")
