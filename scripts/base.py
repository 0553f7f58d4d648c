"""Build the shared base model: pretrain the tiny one, or save a pretrained one in its dtype."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.train import make_base
from ordermerge.runner import log, parser, record, start
from ordermerge.utils import atomic_dir

p = parser(__doc__)
p.add_argument("--tokenizer", type=Path, help="tokenizer directory (tiny source)")
p.add_argument("--corpus", type=Path, help="pretraining corpus (tiny source)")
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args)
with atomic_dir(args.out_dir) as tmp:
    inputs = make_base(args.params, tmp, args.tokenizer, args.corpus, log)
    record(args, tmp, t0, inputs, seeds={"seed": args.params["seed"]}, final=args.out_dir)
