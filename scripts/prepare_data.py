"""Write a task's train / validation / test rows, with stable ids."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.prepare import prepare
from ordermerge.data.sources import DatasetUnavailable
from ordermerge.provenance import now, write_record
from ordermerge.runner import one_line_errors, parser
from ordermerge.utils import write_jsonl

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
# a dataset that cannot be read, or a row the task cannot use: prepare() names the config
# key, file, line or row; the job log shows that line, not a traceback around it
one_line_errors(DatasetUnavailable, ValueError)
start = now()
cfg = args.params
origin: dict = {}
splits = prepare(args.task, cfg["data"], cfg["seed"], f"tasks.{args.task}.data", origin=origin)
# the local files read, hashed as inputs too, so that an audit can re-check them
inputs = sorted({f for o in origin.values() for f in o.get("files", {})})
for split, rows in splits.items():
    out = args.out_dir / f"{split}.jsonl"
    write_jsonl(out, rows)
    src = "test" if split == "test" else "train"
    write_record(out, rule=args.rule, params=cfg, seeds={"seed": cfg["seed"]}, inputs=inputs,
                 start=start, derived={"source": origin[src]})
    print(f"{args.task} {split}: {len(rows)} rows", file=sys.stderr)
