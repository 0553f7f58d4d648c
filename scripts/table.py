"""Build Table 1 (single SFT vs merges, per task) from evaluation records."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.provenance import now, write_record
from ordermerge.report.tables import table1, to_markdown
from ordermerge.runner import parser
from ordermerge.utils import atomic_file

p = parser(__doc__)
p.add_argument("--csv", required=True, type=Path)
p.add_argument("--md", required=True, type=Path)
p.add_argument("records", nargs="+", type=Path)
args = p.parse_args()
t0 = now()
records = []
for path in args.records:
    r = json.loads(path.read_text())
    records.append({"task": r["task"], "kind": r["kind"], "name": r["name"], "score": r["score"],
                    "path": str(path)})
table = table1(records)
with atomic_file(args.csv) as fh:
    table.to_csv(fh, float_format="%.4f")
with atomic_file(args.md) as fh:
    fh.write(to_markdown(table))
for out in (args.csv, args.md):
    write_record(out, rule=args.rule, params=args.params, seeds={}, inputs=args.records, start=t0)
print(to_markdown(table))
