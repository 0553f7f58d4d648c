"""The cost table: wall, CPU and GPU hours per rule group and per paper table, from the
jobs' benchmark files (ordermerge/report/cost.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.provenance import now, write_record
from ordermerge.report.cost import cost_table, read_benchmarks, to_markdown
from ordermerge.runner import parser
from ordermerge.utils import atomic_file

p = parser(__doc__)
p.add_argument("--benchmarks", required=True, type=Path)
p.add_argument("--sft", required=True, type=Path, help="the SFT runs' directory (their run.json)")
p.add_argument("--csv", required=True, type=Path)
p.add_argument("--md", required=True, type=Path)
args = p.parse_args()
t0 = now()
jobs = read_benchmarks(args.benchmarks, args.sft)
table = cost_table(jobs, args.params)
with atomic_file(args.csv) as fh:
    table.to_csv(fh, float_format="%.6f")
md = to_markdown(table)
with atomic_file(args.md) as fh:
    fh.write(md)
for out in (args.csv, args.md):
    write_record(out, rule=args.rule, params=args.params, seeds={}, start=t0,
                 inputs=sorted(args.benchmarks.rglob("*.tsv")) + sorted(args.sft.rglob("run.json")))
print(md)
