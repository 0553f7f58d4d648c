"""Align a multi-task group's single-task models and base to one vocabulary (MergeLM's way)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.merge.align import align
from ordermerge.merge.engine import MergeError
from ordermerge.models import local_model_dir
from ordermerge.provenance import write_record
from ordermerge.runner import log, parser, start
from ordermerge.utils import atomic_dir

p = parser(__doc__)
p.add_argument("--group", required=True)
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args, models=False)
cfg = args.params
key = f"multitask.groups.{args.group}"
models = {t: local_model_dir(src, f"{key}.models.{t}") for t, src in cfg["models"].items()}
base = local_model_dir(cfg["base"], f"{key}.base")
with atomic_dir(args.out_dir) as tmp:
    try:
        record = align(models, base, tmp)
    except MergeError as e:
        raise SystemExit(f"multitask_align {args.group}: {e}")
    (tmp / "align.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    write_record(tmp, final=args.out_dir, rule=args.rule, params=cfg, seeds={},
                 inputs=[*models.values(), base], start=t0)
log(f"{args.group}: {record['target_rows']} vocabulary rows; extended {record['extended'] or 'none'}")
