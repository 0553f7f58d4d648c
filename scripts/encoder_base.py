"""Build the encoder of the encoder tasks: the tiny BERT (WordPiece + masked-LM pretraining on
the tasks' training text), or a pretrained one saved in its dtype."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.data.registry import get_task
from ordermerge.encoder import build_tiny_bert, mlm_pretrain, train_wordpiece
from ordermerge.models import dtype_of, save_model
from ordermerge.provenance import write_record
from ordermerge.runner import log, parser, start
from ordermerge.utils import atomic_dir, read_jsonl

p = parser(__doc__)
p.add_argument("--train", nargs="*", type=Path, default=[],
               help="the encoder tasks' training rows, results/data/<task>/train.jsonl")
p.add_argument("--out-dir", required=True, type=Path)
args = p.parse_args()
t0 = start(args)
cfg = args.params
with atomic_dir(args.out_dir) as tmp:
    if cfg["source"] == "tiny":
        if not args.train:
            raise SystemExit("encoder_base: no encoder task's training rows to pretrain on")
        lines = []
        for f in args.train:
            task = get_task(f.parent.name)  # the encoder's text: the rows' prompt (text, pair, question + context)
            lines += [task.prompt(r).replace(" [SEP] ", " ") for r in read_jsonl(f)]
        tokenizer = train_wordpiece(lines, cfg["vocab_size"])
        model = build_tiny_bert(cfg["tiny"], tokenizer, cfg["seed"])
        log(f"tiny bert: {sum(p.numel() for p in model.parameters())} parameters, "
            f"{len(tokenizer)} tokens, {len(lines)} pretraining lines")
        curve = mlm_pretrain(model, tokenizer, lines, cfg["pretrain"], cfg["seed"], log)
        (tmp / "pretrain_log.json").write_text(json.dumps({"loss": curve}, indent=1) + "\n")
    else:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        from ordermerge.data.sources import hub_reachable
        if not Path(cfg["source"]).is_dir() and not hub_reachable():
            raise SystemExit(f"encoder {cfg['source']!r} is not reachable: offline or no network. "
                             f"Set encoder.source to a local copy.")
        model = AutoModelForMaskedLM.from_pretrained(cfg["source"])
        tokenizer = AutoTokenizer.from_pretrained(cfg["source"])
    save_model(model, tokenizer, tmp, dtype_of(cfg["dtype"]))
    write_record(tmp, final=args.out_dir, rule=args.rule, params=cfg, seeds={"seed": cfg["seed"]},
                 inputs=list(args.train), start=t0)
