"""Build Table 1 (single SFT vs merges, per task), Table 2 (per model), Table 3 (multi-task
merging, per group) or Table 4 (shuffled vs fix-batch orders) from evaluation records, as CSV, Markdown and
LaTeX, with intervals and paired tests (ordermerge/report/tables.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.provenance import now, write_record
from ordermerge.report import tables
from ordermerge.runner import parser
from ordermerge.utils import atomic_file

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
paths = [Path(r["path"]) for r in records]
stat = args.params.get("stats")
if args.table == "3":
    table = tables.table3(records, stat)
    md, tex = tables.table3_markdown(table), tables.table3_latex(table)
elif args.table == "2":
    table = tables.table2([{k: v for k, v in r.items() if k != "scheme"} for r in records], stat)
    md, tex = tables.table2_markdown(table), tables.table2_latex(table)
else:
    if args.table == "1":
        table = tables.table1([{k: v for k, v in r.items() if k != "scheme"} for r in records], stat)
    else:
        table = tables.table4(records, stat)
    md = tables.to_markdown(table)
    tex = tables.to_latex(table, caption=f"Table {args.table}")
outs = [args.csv, args.md] + ([args.tex] if args.tex else [])
with atomic_file(args.csv) as fh:
    table.to_csv(fh, float_format="%.4f")
with atomic_file(args.md) as fh:
    fh.write(md)
if args.tex:
    with atomic_file(args.tex) as fh:
        fh.write(tex)
for out in outs:
    write_record(out, rule=args.rule, params=args.params, seeds={"test_seed": int(table["test_seed"].iloc[0])},
                 inputs=paths, start=t0, derived={"table": args.table, "records": args.records})
print(md)
