"""Models on general benchmarks through lm-evaluation-harness (Table 5): one record per
--candidate and benchmark (config general_eval's tasks), with every item's result and what
lm-eval ran (ordermerge/general_eval.py). The benchmarks' data are read once for all the
candidates of a job."""
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.general_eval import evaluate_general, load_tasks, task_manager
from ordermerge.utils import write_json
from ordermerge.provenance import now
from ordermerge.runner import log, parser, record, start

p = parser(__doc__)
p.add_argument("--candidate", nargs=3, action="append", required=True, metavar=("NAME", "MODEL", "DIR"),
               help="a model to evaluate: its name in the records, its directory, the directory "
                    "of its records (DIR/<benchmark>.json)")
args = p.parse_args()
t0 = start(args)
settings = args.params
tm = task_manager(settings)
tasks = load_tasks(tm, settings)
labels = {k: settings.get(k) for k in ("model", "finetuned", "scheme", "epoch", "kind")}
local = [Path(f) for f in settings["include_path"]]
# backend vllm: one worker and engine for the job's models (weights reloaded in place)
if settings["backend"] == "vllm":
    from ordermerge.evaluate.vllm_backend import VLLMSession
    session = VLLMSession(threads=args.threads)
else:
    session = contextlib.nullcontext()
with session as held:
    for name, model, out_dir in args.candidate:
        records = evaluate_general(model, settings, tasks, tm, session=held)
        for task, rec in records.items():
            rec.update(labels, name=name)
            out = Path(out_dir) / f"{task}.json"
            write_json(out, rec)
            record(args, out, t0, [model, *local], {"lm_eval": settings["seed"]})
            log(f"{labels['kind']}/{name} ({labels['finetuned'] or 'base'}): {task} "
                f"{rec['metric']} {rec['score']:.4f} over {rec['n']}")
        t0 = now()
