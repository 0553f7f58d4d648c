"""Build one of the paper's tables (ordermerge/report/registry.py) from evaluation records, as
CSV, Markdown and LaTeX, with intervals and paired tests (ordermerge/report/tables.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.provenance import now
from ordermerge.report import tables
from ordermerge.report.registry import TABLES
from ordermerge.runner import parser, record

p = parser(__doc__ + " " + " ".join(f"Table {n}: {t.what}." for n, t in TABLES.items()))
p.add_argument("--table", choices=list(TABLES), default="1")
p.add_argument("--csv", required=True, type=Path)
p.add_argument("--md", required=True, type=Path)
p.add_argument("--tex", type=Path)
p.add_argument("records", nargs="+",
               help="evaluation records; for a table with a block key each as BLOCK=PATH "
                    "(Table 2: MODEL=PATH, Table 3: GROUP=PATH, its multi-task group)")
args = p.parse_args()
t0 = now()
try:
    records = tables.read_records(args.records, args.table)
    tables.check_backends(records, args.table, args.params.get("mixed_backends", False))
except ValueError as e:
    sys.exit(str(e))
table, md, tex = tables.build(args.table, records, args.params.get("stats"))
for out in tables.write(table, md, tex, args.csv, args.md, args.tex):
    record(args, out, t0, [Path(r["path"]) for r in records], {"test_seed": int(table["test_seed"].iloc[0])},
           derived={"table": args.table, "records": args.records})
print(md)
