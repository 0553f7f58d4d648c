"""Merge K sub-model checkpoints (or a group's single-task models) with one method of the
registry (its id carries its settings); several --method-id/--out-dir pairs make several
merges of the same models (every seed of a method) after one import."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.merge.methods import get, parse_method_id
from ordermerge.merge.engine import merge
from ordermerge.merge.lora_runs import is_adapter_dir
from ordermerge.merge.rundata import run_data
from ordermerge.provenance import now
from ordermerge.runner import log, parser, record, start

p = parser(__doc__)
p.add_argument("--method-id", required=True, action="append")
p.add_argument("--base", type=Path)
p.add_argument("--fisher", nargs="+", type=Path, help="each sub-model's Fisher (method fisher)")
p.add_argument("--gram", nargs="+", type=Path, help="each sub-model's input Grams (method regmean)")
p.add_argument("--out-dir", required=True, type=Path, action="append", help="one per --method-id")
p.add_argument("sub_models", nargs="+", type=Path)
args = p.parse_args()
if len(args.method_id) != len(args.out_dir):
    p.error(f"{len(args.method_id)} --method-id but {len(args.out_dir)} --out-dir (one each)")
t0 = start(args, models=False)
for mid, out in zip(args.method_id, args.out_dir):
    method, settings = parse_method_id(mid)
    data = run_data(get(method))  # the per-run data it reads, if any (merge/rundata.py)
    if data is not None and data.script != Path(__file__).name:
        p.error(f"{mid}: scripts/{data.script} makes it")
    # LoRA runs: their merge adds the base to the merged update (merge/lora_runs.py)
    base = args.base if get(method).needs_base or is_adapter_dir(args.sub_models[0]) else None
    aux = (args.fisher or args.gram) if data is not None and data.open is not None else None
    # the record is written inside merge(), in this iteration
    recipe = merge(method, args.sub_models, out, overwrite=True, base=base, aux=aux,
                   weights=args.params.get("weights"), **settings,
                   before_rename=lambda tmp, recipe: record(
                       args, tmp, t0, [*args.sub_models, *([base] if base else []), *(aux or [])],
                       {"merge_seed": settings.get("seed")}, final=out,
                       derived={**settings, "method": method}))
    log(f"{mid}: {recipe['stats']} in {recipe['wall_s']:.2f} s")
    t0 = now()
