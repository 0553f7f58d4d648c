"""Build Table 1 (single SFT vs merges, per task) or Table 3 (multi-task merging, per
group) from evaluation records."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.provenance import now, write_record
from ordermerge.report.tables import table1, table3, table3_markdown, to_markdown
from ordermerge.runner import parser
from ordermerge.utils import atomic_file

p = parser(__doc__)
p.add_argument("--table", choices=["1", "3"], default="1")
p.add_argument("--csv", required=True, type=Path)
p.add_argument("--md", required=True, type=Path)
p.add_argument("records", nargs="+",
               help="evaluation records; for Table 3 each as GROUP=PATH (its multi-task group)")
args = p.parse_args()
t0 = now()
records, paths = [], []
for arg in args.records:
    group, path = arg.split("=", 1) if args.table == "3" else (None, arg)
    path = Path(path)
    paths.append(path)
    r = json.loads(path.read_text())
    records.append({"task": r["task"], "kind": r["kind"], "name": r["name"], "score": r["score"],
                    **({"group": group} if group else {}), "path": str(path)})
if args.table == "1":
    table = table1(records)
    md = to_markdown(table)
else:
    table = table3(records)
    md = table3_markdown(table)
with atomic_file(args.csv) as fh:
    table.to_csv(fh, float_format="%.4f")
with atomic_file(args.md) as fh:
    fh.write(md)
for out in (args.csv, args.md):
    write_record(out, rule=args.rule, params=args.params, seeds={}, inputs=paths, start=t0)
print(md)
