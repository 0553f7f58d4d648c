"""Write the tiny suite's pretraining corpus and train its tokenizer on the suite's text."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.registry import get_task
from ordermerge.data.toy import pretraining_corpus
from ordermerge.models import train_tokenizer
from ordermerge.provenance import write_record
from ordermerge.runner import log, parser, start
from ordermerge.utils import atomic_dir, atomic_file, derive_seed, read_jsonl

p = parser(__doc__)
p.add_argument("--train", nargs="+", type=Path, required=True,
               help="train.jsonl of every task, named results/data/<task>/train.jsonl")
p.add_argument("--corpus", required=True, type=Path)
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args)
cfg = args.params
lines = pretraining_corpus(cfg["corpus_lines"], derive_seed(cfg["seed"], "corpus"))
with atomic_file(args.corpus) as fh:
    fh.write("\n".join(lines) + "\n")
write_record(args.corpus, rule=args.rule, params=cfg, seeds={"seed": cfg["seed"]}, inputs=[],
             start=t0)
texts = list(lines)
for path in args.train:
    task = get_task(path.parent.name)
    texts += [task.prompt(r) + task.target(r) for r in read_jsonl(path)]
tok = train_tokenizer(texts, cfg["vocab_size"])
log(f"tokenizer: {len(tok)} tokens from {len(texts)} texts")
with atomic_dir(args.out_dir) as tmp:
    tok.save_pretrained(tmp)
    write_record(tmp, final=args.out_dir, rule=args.rule, params=cfg, seeds={"seed": cfg["seed"]},
                 inputs=[*args.train, args.corpus], start=t0)
