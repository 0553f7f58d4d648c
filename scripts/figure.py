"""Figures 1, 3 and 4 (ordermerge/report/figures.py): PNG, SVG and the CSV of their data,
plus for Figure 1 the table of Spearman's rho of every model (CSV and Markdown)."""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

from ordermerge.provenance import now, write_record
from ordermerge.report import figures
from ordermerge.runner import parser
from ordermerge.scoring import read_losses
from ordermerge.utils import atomic_file

p = parser(__doc__)
p.add_argument("--figure", choices=["1", "3", "4"], required=True)
p.add_argument("--stem", required=True, type=Path, help="output path without extension")
p.add_argument("--anchor", default="run0")
p.add_argument("inputs", nargs="+", metavar="NAME=PATH",
               help="runN=samples.csv (Figures 1, 3), NAME=losses.csv (scored models; "
                    "runN for sub-models), single=curve.csv and METHOD_ID=curve.csv (Figure 4)")
args = p.parse_args()
t0 = now()
named = [a.split("=", 1) for a in args.inputs]
bad = [a for a, x in zip(args.inputs, named) if len(x) != 2]
if bad:
    sys.exit(f"figure: arguments {bad} are not NAME=PATH")
is_run = re.compile(r"run\d+$").match
samples = {n: figures.read_samples(path) for n, path in named if path.endswith("samples.csv")}
scores = {n: read_losses(path) for n, path in named if path.endswith(".csv") and "/scores/" in path}
cfg = args.params
outs = []
if args.figure == "1":
    merged = {n: v for n, v in scores.items() if not is_run(n)}
    data, rho, fig = figures.figure1(samples, merged, args.anchor, panels=cfg.get("panels", 4),
                                     bins=cfg.get("bins", 10))
    rho_stem = args.stem.with_name(args.stem.name + "_rho")
    with atomic_file(rho_stem.with_suffix(".csv")) as fh:
        rho.to_csv(fh, index=False, float_format="%.4f")
    md = ["| model | kind | positions of | ρ | 95% CI | p | n |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r.model} | {r.kind} | {r.positions_of} | {r.rho:.3f} | [{r.low:.3f}, {r.high:.3f}] "
           f"| {r.p:.2g} | {r.n} |" for r in rho.itertuples()]
    with atomic_file(rho_stem.with_suffix(".md")) as fh:
        fh.write("\n".join(md) + "\n")
    outs += [rho_stem.with_suffix(".csv"), rho_stem.with_suffix(".md")]
elif args.figure == "3":
    positions = samples[args.anchor]["position"]
    kinds = {n: "sft" if is_run(n) else "merged" for n in scores}
    data, fig = figures.figure3(positions, scores, args.anchor, kinds, segments=cfg.get("segments", 5))
else:
    curves = {n: pd.read_csv(path) for n, path in named}
    if "single" not in curves:
        sys.exit("figure 4: no single=CURVE argument (the sub-models' curve)")
    single = curves.pop("single")
    data, fig = figures.figure4(single, curves)
outs += figures.save(fig, data, args.stem)
for out in outs:
    write_record(out, rule=args.rule, params=cfg, seeds={}, inputs=[path for _, path in named],
                 start=t0)
print("\n".join(map(str, outs)))
