"""Merge K sub-model checkpoints (or a group's single-task models) with one method of the
registry (its id carries its settings)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.merge import get, parse_method_id
from ordermerge.merge.engine import merge
from ordermerge.runner import log, parser, record, start

p = parser(__doc__)
p.add_argument("--method-id", required=True)
p.add_argument("--base", type=Path)
p.add_argument("--out-dir", required=True, type=Path)
p.add_argument("sub_models", nargs="+", type=Path)
args = p.parse_args()
t0 = start(args, models=False)
method, settings = parse_method_id(args.method_id)
base = args.base if get(method).needs_base else None
recipe = merge(method, args.sub_models, args.out_dir, overwrite=True, base=base,
               weights=args.params.get("weights"), **settings,
               before_rename=lambda tmp, recipe: record(
                   args, tmp, t0, [*args.sub_models, *([base] if base else [])],
                   {"merge_seed": settings.get("seed")}, final=args.out_dir,
                   derived={**settings, "method": method}))
log(f"{args.method_id}: {recipe['stats']} in {recipe['wall_s']:.2f} s")
