"""One SFT run of the base model on one task, following one data order (ordermerge.sft)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.runner import log, parser, start
from ordermerge.train_args import train_arguments
from ordermerge.sft import train_from_args

p = parser(__doc__)
train_arguments(p)
args = p.parse_args()
start(args)
train_from_args(args, args.params, args.rule, log)
