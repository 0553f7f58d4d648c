"""SFT throughput: `ordermerge train` (ordermerge.sft.SFTRun) against a plain PyTorch loop.

Both train the same model from the same weights on the same rows, in the same
micro-batches (padded to their longest row), with AdamW: the plain loop is the
least a training loop can do (forward, backward, step; on a GPU bf16 autocast,
fused AdamW and SDPA attention, as the run uses). Rows are digit strings (one
token per digit with the project's tokenizer), lengths varying by +-25% around
--length, the loss on the target part only. The figure for each is real (non-pad)
tokens per second of the training loop, the median of --repeats alternating runs
in this process; `ordermerge train` includes its per-step bookkeeping, step-id
gathering, the epoch-end validation pass, checkpoint and resume-state saves.

    python bench/train.py                          # CPU: the tiny suite's model
    python bench/train.py --preset tinyllama       # GPU: 1.1B (TinyLlama shape), 16 x 800

Prints the figures and writes results/bench/train.json (device, tokens_per_s,
plain_loop_tokens_per_s, ratio).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ordermerge.models import build_tiny, save_model, train_tokenizer  # noqa: E402
from ordermerge.sft import DEFAULTS, SFTRun  # noqa: E402
from ordermerge.train import collate, encode_example, token_losses  # noqa: E402

PRESETS = {
    # the tiny suite's model (config.yaml)
    "tiny": {"arch": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
                      "num_attention_heads": 4, "max_position_embeddings": 256,
                      "tie_word_embeddings": False},
             "vocab": 384, "rows": 640, "length": 96, "batch": 8, "micro": 8},
    # TinyLlama-1.1B's shape (the GPU anchor: batch 16, length 800)
    "tinyllama": {"arch": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                           "num_attention_heads": 32, "num_key_value_heads": 4,
                           "max_position_embeddings": 2048, "tie_word_embeddings": False,
                           "vocab_size": 32000},
                  "vocab": 384, "rows": 320, "length": 800, "batch": 16, "micro": 16},
}


def digit_rows(n: int, length: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        total = rng.randint(int(length * 0.75), length - 2)
        p = total // 4
        rows.append({"id": f"bench:{i:06d}",
                     "prompt": "".join(rng.choice("0123456789") for _ in range(p)),
                     "target": "".join(rng.choice("0123456789") for _ in range(total - p))})
    return rows


# a decoder task as the SFT run sees it (ordermerge.objectives.objective_for reads `family`)
TASK = SimpleNamespace(family="decoder", prompt=lambda r: r["prompt"], target=lambda r: r["target"])


def plain_loop(base: Path, rows: list[dict], tokenizer, cfg: dict, device: torch.device) -> float:
    """Real tokens per second of the least training loop over the same micro-batches."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], fused=device.type == "cuda")
    examples = [encode_example(r["prompt"], r["target"], tokenizer, cfg["max_length"]) for r in rows]
    B, mB = cfg["batch_size"], cfg["micro_batch_size"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    tokens = 0
    sync()
    t0 = time.perf_counter()
    for b in range(0, len(examples), B):
        batch_rows = examples[b:b + B]
        n_target = sum(sum(1 for x in e["labels"][1:] if x != -100) for e in batch_rows)
        for m in range(0, len(batch_rows), mB):
            batch = {k: v.to(device) for k, v in collate(batch_rows[m:m + mB], tokenizer.pad_token_id).items()}
            with autocast:
                total, _ = token_losses(model, batch)
            (total.sum() / n_target).backward()
            tokens += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    return tokens / (time.perf_counter() - t0)


def ordermerge_run(base: Path, rows: list[dict], val: list[dict], tokenizer, cfg: dict,
                   out: Path) -> float:
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    run = SFTRun(model, tokenizer, train_rows=rows, validation_rows=val, task=TASK,
                 order=[[r["id"] for r in rows]], cfg=cfg, save_dtype=torch.bfloat16, out_dir=out,
                 provenance={"rule": "bench", "params": cfg, "seeds": {}, "inputs": []},
                 log=lambda m: None)
    return run.run()["tokens_per_s"]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="tiny on the CPU, tinyllama on a GPU (default by device)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows", type=int, help="training rows (one epoch)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=ROOT / "results/bench/train.json")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset_name = args.preset or ("tinyllama" if device.type == "cuda" else "tiny")
    preset = PRESETS[preset_name]
    torch.set_num_threads(args.threads)
    rows = digit_rows((args.rows or preset["rows"]) + 16, preset["length"], seed=0)
    train, val = rows[:-16], rows[-16:]
    tokenizer = train_tokenizer([r["prompt"] + r["target"] for r in rows[:200]] + ["0123456789"] * 10,
                                preset["vocab"])
    cfg = {**DEFAULTS, "lr": 1e-4, "batch_size": preset["batch"], "micro_batch_size": preset["micro"],
           "max_length": preset["length"], "warmup_ratio": 0.03}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        arch = dict(preset["arch"])
        vocab = arch.pop("vocab_size", None)
        model = build_tiny(arch, tokenizer, seed=0)
        if vocab:  # a full-size embedding, whatever the tokenizer's own size
            model.resize_token_embeddings(vocab)
        save_model(model, tokenizer, base, torch.bfloat16)
        del model
        plain, ours = [], []
        for r in range(args.repeats):
            plain.append(plain_loop(base, train, tokenizer, cfg, device))
            ours.append(ordermerge_run(base, train, val, tokenizer, cfg, Path(tmp) / f"run{r}"))
            print(f"repeat {r}: plain loop {plain[-1]:.0f} tokens/s, ordermerge train {ours[-1]:.0f}",
                  flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({args.threads} threads)"
    report = {"device": name, "preset": preset_name, "date": time.strftime("%Y-%m-%d"),
              "rows": len(train), "batch_size": cfg["batch_size"],
              "micro_batch_size": cfg["micro_batch_size"], "max_length": cfg["max_length"],
              "repeats": args.repeats, "tokens_per_s": statistics.median(ours),
              "plain_loop_tokens_per_s": statistics.median(plain),
              "runs": {"tokens_per_s": ours, "plain_loop_tokens_per_s": plain}}
    report["ratio"] = report["tokens_per_s"] / report["plain_loop_tokens_per_s"]
    if device.type == "cuda":
        report["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(f"{name}, {preset_name}: ordermerge train {report['tokens_per_s']:.0f} tokens/s, "
          f"plain loop {report['plain_loop_tokens_per_s']:.0f} tokens/s, ratio {report['ratio']:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
