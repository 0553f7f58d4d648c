"""Merge K sub-model checkpoints (or a group's single-task models) with one method of the
registry (its id carries its settings); several --method-id/--out-dir pairs make several
merges of the same models (every seed of a method) after one import."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.merge.methods import get, parse_method_id
from ordermerge.merge.engine import merge
from ordermerge.merge.greedy_soup import build as build_soup
from ordermerge.provenance import now
from ordermerge.runner import log, parser, record, start

p = parser(__doc__)
p.add_argument("--method-id", required=True, action="append")
p.add_argument("--base", type=Path)
p.add_argument("--fisher", nargs="+", type=Path, help="each sub-model's Fisher (method fisher)")
p.add_argument("--validation", nargs="+", type=Path,
               help="each sub-model's validation record (method greedy_soup)")
p.add_argument("--validation-split", type=Path, help="the validation rows (method greedy_soup)")
p.add_argument("--out-dir", required=True, type=Path, action="append", help="one per --method-id")
p.add_argument("sub_models", nargs="+", type=Path)
args = p.parse_args()
if len(args.method_id) != len(args.out_dir):
    p.error(f"{len(args.method_id)} --method-id but {len(args.out_dir)} --out-dir (one each)")
# greedy soup evaluates its candidates: as the evaluate jobs, deterministic mode
soups = [get(parse_method_id(mid)[0]).data == "validation" for mid in args.method_id]
if any(soups) and (not args.validation or args.validation_split is None):
    p.error("greedy_soup needs --validation (one record per sub-model) and --validation-split")
t0 = start(args, models=any(soups))
for mid, out, soup in zip(args.method_id, args.out_dir, soups):
    method, settings = parse_method_id(mid)
    base = args.base if get(method).needs_base else None
    aux = args.fisher if get(method).data == "fisher" else None
    inputs = [*args.sub_models, *([base] if base else []), *(aux or []),
              *([*args.validation, args.validation_split] if soup else [])]

    def provenance(tmp, recipe, settings=settings, method=method, out=out, inputs=inputs):
        # the record is written inside merge(), in this iteration
        record(args, tmp, t0, inputs, {"merge_seed": settings.get("seed")}, final=out,
               derived={**settings, "method": method})
    if soup:  # candidate soups merged and evaluated on the validation split first
        recipe = build_soup(args.sub_models, args.validation, args.params["task"],
                            args.validation_split, args.params["evaluate"], out,
                            threads=args.threads, log=log, before_rename=provenance)
    else:
        recipe = merge(method, args.sub_models, out, overwrite=True, base=base, aux=aux,
                       weights=args.params.get("weights"), **settings, before_rename=provenance)
    log(f"{mid}: {recipe['stats']} in {recipe['wall_s']:.2f} s")
    t0 = now()
