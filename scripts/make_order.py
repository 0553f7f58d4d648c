"""Write one run's data order: the training row ids per epoch."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.orders import make_order
from ordermerge.provenance import now, write_record
from ordermerge.runner import parser
from ordermerge.utils import read_jsonl, write_json

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--scheme", required=True)
p.add_argument("--run", required=True, type=int)
p.add_argument("--train", required=True, type=Path)
p.add_argument("--out", required=True, type=Path)
args = p.parse_args()
start = now()
cfg = args.params
ids = [r["id"] for r in read_jsonl(args.train)]
# a control of Figure 1 (control-repeat, control-reseed) is the order of run `run` of the
# control's scheme, drawn from the global seed; its "seed" (what seeds the SFT run) is the
# control's: the global one again, or another
control = cfg.get("control")
epochs = make_order(ids, scheme=control["scheme"] if control else args.scheme, run=args.run,
                    epochs=cfg["epochs"], seed=cfg["seed"], task=args.task,
                    batch_size=cfg["batch_size"])
seed = control["seed"] if control else cfg["seed"]
write_json(args.out, {"task": args.task, "scheme": args.scheme, "run": args.run, "seed": seed,
                      "batch_size": cfg["batch_size"], "epochs": epochs}
           | ({"order_of": {"scheme": control["scheme"], "seed": cfg["seed"]}} if control else {}))
write_record(args.out, rule=args.rule, params=cfg, seeds={"seed": seed, "run": args.run},
             inputs=[args.train], start=start)
