"""The cost table: wall, CPU and GPU hours per rule group and per paper table, from the
jobs' benchmark files (ordermerge/report/cost.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.provenance import now
from ordermerge.report.cost import cost_table, job_log, read_benchmarks, to_markdown
from ordermerge.report.tables import write
from ordermerge.runner import parser, record

p = parser(__doc__)
p.add_argument("--benchmarks", required=True, type=Path)
p.add_argument("--sft", required=True, type=Path, help="the SFT runs' directory (their run.json)")
p.add_argument("--logs", type=Path, help="the jobs' logs (results/logs): a job forked from the "
               "warm worker has its own CPU time on its log's last line")
p.add_argument("--csv", required=True, type=Path)
p.add_argument("--md", required=True, type=Path)
args = p.parse_args()
t0 = now()
table = cost_table(read_benchmarks(args.benchmarks, args.sft, args.logs), args.params["resources"],
                   args.params["stage_of"])
logs = ([] if args.logs is None else
        [log for b in sorted(args.benchmarks.rglob("*.tsv"))
         if (log := job_log(args.logs, b.relative_to(args.benchmarks))).is_file()])
md = to_markdown(table)
for out in write(table, md, "", args.csv, args.md, float_format="%.6f"):
    record(args, out, t0, sorted(args.benchmarks.rglob("*.tsv")) + sorted(args.sft.rglob("run.json"))
           + logs)
print(md)
