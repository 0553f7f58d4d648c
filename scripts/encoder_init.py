"""An encoder task's starting model: the encoder plus the task's head, seeded by the task."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.encoder import init_task_model
from ordermerge.runner import log, parser, record, start
from ordermerge.utils import atomic_dir

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--base", required=True, type=Path)
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args)
with atomic_dir(args.out_dir) as tmp:
    seed = init_task_model(args.task, args.base, tmp, args.params)
    record(args, tmp, t0, [args.base], seeds={"head_seed": seed}, final=args.out_dir)
log(f"{args.task}: the encoder of {args.base} with its head")
