"""Build the encoder of the encoder tasks: the tiny BERT (WordPiece + masked-LM pretraining on
the tasks' training text), or a pretrained one saved in its dtype (ordermerge.encoder)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.encoder import make_encoder
from ordermerge.runner import log, parser, record, start
from ordermerge.utils import atomic_dir

p = parser(__doc__)
p.add_argument("--train", nargs="*", type=Path, default=[],
               help="the encoder tasks' training rows, results/data/<task>/train.jsonl")
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args)
with atomic_dir(args.out_dir) as tmp:
    make_encoder(args.params, tmp, args.train, log)
    record(args, tmp, t0, args.train, seeds={"seed": args.params["seed"]}, final=args.out_dir)
