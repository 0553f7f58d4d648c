"""Write the tiny suite's pretraining corpus and train its tokenizer on the suite's text."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.corpus import pretraining_corpus
from ordermerge.data.registry import get_task
from ordermerge.models import train_tokenizer
from ordermerge.provenance import write_record
from ordermerge.runner import log, parser, start
from ordermerge.utils import atomic_dir, atomic_file, derive_seed, read_jsonl

p = parser(__doc__)
p.add_argument("--data-dirs", nargs="+", type=Path, required=True,
               help="every task's prepared data, results/data/<task>/ (named by the task)")
p.add_argument("--corpus", required=True, type=Path)
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args)
cfg = args.params
tasks = [get_task(d.name) for d in args.data_dirs]
held_out, texts, inputs = set(), [], []
for task, d in zip(tasks, args.data_dirs):
    for split in ("validation", "test"):
        held_out |= {task.prompt(r) for r in read_jsonl(d / f"{split}.jsonl")}
    texts += [task.prompt(r) + task.target(r) for r in read_jsonl(d / "train.jsonl")]
    inputs += [d / f"{split}.jsonl" for split in ("train", "validation", "test")]
lines = pretraining_corpus(tasks, cfg["corpus_lines"], derive_seed(cfg["seed"], "corpus"),
                           cfg["corpus_task_fraction"], held_out)
with atomic_file(args.corpus) as fh:
    fh.write("\n".join(lines) + "\n")
write_record(args.corpus, rule=args.rule, params=cfg, seeds={"seed": cfg["seed"]}, inputs=inputs,
             start=t0)
# the tokenizer sees the corpus and the tasks' training rows
texts += lines
tok = train_tokenizer(texts, cfg["vocab_size"])
log(f"tokenizer: {len(tok)} tokens from {len(texts)} texts")
with atomic_dir(args.out_dir) as tmp:
    tok.save_pretrained(tmp)
    write_record(tmp, final=args.out_dir, rule=args.rule, params=cfg, seeds={"seed": cfg["seed"]},
                 inputs=[*inputs, args.corpus], start=t0)
