"""Figures 1, 3 and 4 (ordermerge/report/figures.py): PNG, SVG and the CSV of their data,
plus for Figure 1 the table of Spearman's rho of every model (CSV and Markdown)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.provenance import now
from ordermerge.report import figures
from ordermerge.runner import parser, record

p = parser(__doc__)
p.add_argument("--figure", choices=["1", "3", "4"], required=True)
p.add_argument("--stem", required=True, type=Path, help="output path without extension")
p.add_argument("--anchor", default="run0")
p.add_argument("inputs", nargs="+", metavar="NAME=PATH",
               help="runN=samples.csv (Figures 1, 3: the runs' order positions), "
                    "NAME=losses.csv (scored models; runN for sub-models), single=curve.csv and METHOD_ID=curve.csv (Figure 4)")
args = p.parse_args()
t0 = now()
try:
    named = figures.parse_named(args.inputs)
    outs = figures.make(args.figure, named, args.stem, args.anchor, args.params)
except ValueError as e:
    sys.exit(str(e))
for out in outs:
    record(args, out, t0, [path for _, path in named])
print("\n".join(map(str, outs)))
