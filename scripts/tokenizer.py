"""Write the tiny suite's pretraining corpus and train its tokenizer on the suite's text."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.corpus import tiny_corpus
from ordermerge.models import train_tokenizer
from ordermerge.runner import log, parser, record, start
from ordermerge.utils import atomic_dir, atomic_file

p = parser(__doc__)
p.add_argument("--data-dirs", nargs="+", type=Path, required=True,
               help="every task's prepared data, results/data/<task>/ (named by the task)")
p.add_argument("--corpus", required=True, type=Path)
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0, seeds = start(args), {"seed": args.params["seed"]}
lines, texts, inputs = tiny_corpus(args.data_dirs, args.params)
with atomic_file(args.corpus) as fh:
    fh.write("\n".join(lines) + "\n")
record(args, args.corpus, t0, inputs, seeds)
tok = train_tokenizer(texts, args.params["vocab_size"])
log(f"tokenizer: {len(tok)} tokens from {len(texts)} texts")
with atomic_dir(args.out_dir) as tmp:
    tok.save_pretrained(tmp)
    record(args, tmp, t0, [*inputs, args.corpus], seeds, final=args.out_dir)
