"""An encoder task's starting model: the encoder plus the task's head, seeded by the task."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoTokenizer

from ordermerge.data.registry import get_task
from ordermerge.encoder import load_with_head
from ordermerge.models import dtype_of, save_model
from ordermerge.provenance import write_record
from ordermerge.runner import log, parser, start
from ordermerge.utils import atomic_dir, derive_seed

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--base", required=True, type=Path)
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args)
cfg = args.params
task = get_task(args.task)
if task.family != "encoder":
    raise SystemExit(f"encoder_init: task {task.name!r} is not an encoder task")
seed = derive_seed(cfg["seed"], "encoder-head")
model = load_with_head(task, args.base, seed)
with atomic_dir(args.out_dir) as tmp:
    save_model(model, AutoTokenizer.from_pretrained(args.base), tmp, dtype_of(cfg["dtype"]))
    write_record(tmp, final=args.out_dir, rule=args.rule, params=cfg, seeds={"head_seed": seed},
                 inputs=[args.base], start=t0)
log(f"{task.name}: {type(model).__name__} from {args.base}")
