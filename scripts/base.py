"""Build the shared base model: pretrain the tiny one, or save a pretrained one in its dtype."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.models import build_tiny, dtype_of, load_pretrained_source, save_model
from ordermerge.provenance import write_record
from ordermerge.runner import log, parser, start
from ordermerge.train import pretrain
from ordermerge.utils import atomic_dir

p = parser(__doc__)
p.add_argument("--tokenizer", type=Path, help="tokenizer directory (tiny source)")
p.add_argument("--corpus", type=Path, help="pretraining corpus (tiny source)")
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args)
cfg = args.params
dtype = dtype_of(cfg["dtype"])
inputs = []
with atomic_dir(args.out_dir) as tmp:
    if cfg["source"] == "tiny":
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        model = build_tiny(cfg["tiny"], tokenizer, cfg["seed"])
        n_params = sum(p.numel() for p in model.parameters())
        log(f"tiny llama: {n_params} parameters")
        lines = args.corpus.read_text().splitlines()
        curve = pretrain(model, tokenizer, lines, cfg["pretrain"], cfg["seed"], log)
        (tmp / "pretrain_log.json").write_text(json.dumps(
            {"parameters": n_params, "loss": curve}, indent=1) + "\n")
        inputs = [args.tokenizer, args.corpus]
    else:
        model, tokenizer = load_pretrained_source(cfg["source"], cfg["dtype"], "model.source")
    save_model(model, tokenizer, tmp, dtype)
    write_record(tmp, final=args.out_dir, rule=args.rule, params=cfg, seeds={"seed": cfg["seed"]},
                 inputs=inputs, start=t0)
