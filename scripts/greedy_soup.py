"""Greedy soup of K runs (ordermerge/merge/greedy_soup.py): the runs ordered by their
validation records, each candidate soup merged and evaluated on the validation split, the
uniform average of the kept runs written with every step in its merge.json."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.merge.greedy_soup import build
from ordermerge.runner import log, parser, record, start

p = parser(__doc__)
p.add_argument("--method-id", required=True, choices=["greedy-soup"])
p.add_argument("--out-dir", required=True, type=Path)
p.add_argument("--validation", required=True, nargs="+", type=Path,
               help="each run's validation record, in the runs' order")
p.add_argument("--validation-split", required=True, type=Path, help="the validation rows")
p.add_argument("sub_models", nargs="+", type=Path)
args = p.parse_args()
t0 = start(args)  # candidates are evaluated as the evaluate jobs evaluate: deterministic mode
inputs = [*args.sub_models, *args.validation, args.validation_split]
recipe = build(args.sub_models, args.validation, args.params["task"], args.validation_split,
               args.params["evaluate"], args.out_dir, threads=args.threads, log=log,
               before_rename=lambda tmp, recipe: record(args, tmp, t0, inputs, final=args.out_dir,
                                                        derived={"method": recipe["method"]}))
kept = recipe["soup"]["kept"]
log(f"greedy soup: runs {kept} of {len(args.sub_models)} kept in {recipe['wall_s']:.2f} s")
