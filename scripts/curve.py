"""Validation loss at every saved point of the K runs (epoch ends and train.save_steps):
each run's own checkpoint, or (with --method-id) the merge of the K runs' checkpoints taken
at the same point. The data of Figure 4."""
import csv
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.registry import get_task
from ordermerge.merge import get, parse_method_id
from ordermerge.merge.engine import merge
from ordermerge.provenance import write_record
from ordermerge.runner import log, parser, start
from ordermerge.scoring import score_rows
from ordermerge.utils import atomic_file, read_jsonl

p = parser(__doc__)
p.add_argument("--task", required=True)
p.add_argument("--rows", required=True, type=Path, help="the validation rows (jsonl)")
p.add_argument("--method-id", help="merge the runs at each point with this method")
p.add_argument("--base", type=Path, help="the runs' start model (task-vector methods)")
p.add_argument("--out", required=True, type=Path)
p.add_argument("runs", nargs="+", type=Path, help="the K SFT run directories")
args = p.parse_args()
t0 = start(args)
task, rows, cfg = get_task(args.task), read_jsonl(args.rows), args.params


def points(run: Path) -> list[tuple[int, str]]:
    """(optimizer steps done, checkpoint directory name) of a run, from its run.json."""
    summary = json.loads((run / "run.json").read_text())
    return sorted((int(n), name) for n, names in summary["checkpoints"].items() for name in names)


plan = points(args.runs[0])
for r in args.runs[1:]:
    if points(r) != plan:
        sys.exit(f"{r}: checkpoints {points(r)} differ from {args.runs[0]}'s {plan}")


def val_loss(model_dir) -> float:
    losses = score_rows(task, model_dir, rows, max_length=cfg["max_length"],
                        batch_size=cfg["batch_size"])
    return sum(losses.values()) / len(losses)


out = []
for step, name in plan:
    ckpts = [r / name for r in args.runs]
    if args.method_id is None:
        for i, c in enumerate(ckpts):
            out.append((step, name, f"run{i}", val_loss(c)))
    else:
        method, settings = parse_method_id(args.method_id)
        with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=".curve-") as tmp:
            merged = Path(tmp) / "merged"
            merge(method, ckpts, merged, base=args.base if get(method).needs_base else None,
                  weights=cfg.get("weights"), **settings)
            out.append((step, name, args.method_id, val_loss(merged)))
    log(f"{name} (step {step}): " + ", ".join(f"{m} {v:.4f}" for s, _, m, v in out if s == step))
args.out.parent.mkdir(parents=True, exist_ok=True)
with atomic_file(args.out, "w") as fh:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(["step", "checkpoint", "model", "validation_loss"])
    for step, name, m, v in out:
        w.writerow([step, name, m, f"{v:.6f}"])
used = [r / name for r in args.runs for _, name in plan] + [r / "run.json" for r in args.runs]
write_record(args.out, rule=args.rule, params=cfg, seeds={}, start=t0,
             inputs=[*used, args.rows, *([args.base] if args.base else [])])
