"""Build Table 1 (single SFT vs merges, per task), Table 2 (per model), Table 3 (multi-task
merging, per group) or Table 4 (shuffled vs fix-batch orders) from evaluation records, as CSV, Markdown and
LaTeX, with intervals and paired tests (ordermerge/report/tables.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.provenance import now
from ordermerge.report import tables
from ordermerge.runner import parser, record

p = parser(__doc__)
p.add_argument("--table", choices=["1", "2", "3", "4"], default="1")
p.add_argument("--csv", required=True, type=Path)
p.add_argument("--md", required=True, type=Path)
p.add_argument("--tex", type=Path)
p.add_argument("records", nargs="+",
               help="evaluation records; for Table 3 each as GROUP=PATH (its multi-task group), "
                    "for Table 2 as MODEL=PATH")
args = p.parse_args()
t0 = now()
try:
    records = tables.read_records(args.records, args.table)
except ValueError as e:
    sys.exit(str(e))
table, md, tex = tables.build(args.table, records, args.params.get("stats"))
for out in tables.write(table, md, tex, args.csv, args.md, args.tex):
    record(args, out, t0, [Path(r["path"]) for r in records], {"test_seed": int(table["test_seed"].iloc[0])},
           derived={"table": args.table, "records": args.records})
print(md)
