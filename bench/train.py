"""SFT throughput, two comparisons, each side by side in one process.

--shape uniform (the default): `ordermerge train` (ordermerge.sft.SFTRun) against a plain
PyTorch loop. Both train the same model from the same weights on the same rows, in the same
micro-batches (padded to their longest row), with AdamW: the plain loop is the
least a training loop can do (forward, backward, step; on a GPU bf16 autocast,
fused AdamW and SDPA attention, as the run uses). Rows are digit strings (one
token per digit with the project's tokenizer), lengths varying by +-25% around
--length, the loss on the target part only. The figure for each is real (non-pad)
tokens per second of the training loop, the median of --repeats alternating runs
in this process; `ordermerge train` includes its per-step bookkeeping, step-id
gathering, the epoch-end validation pass, checkpoint and resume-state saves.

--shape gsm8k | alpaca: the plain cut (micro_batch_size consecutive rows, padded to the
longest) against the length-aware cut (train.micro_batch_tokens = micro_batch_size x
max_length, the same padded-token bound per forward pass), both through `ordermerge train`
on rows whose token lengths follow a log-normal fit of the dataset (SHAPES below). Reports
each cut's padding efficiency (real / processed tokens) and real tokens per second, their
ratio, and whether both runs trained every step on the same rows (steps.jsonl).

    python bench/train.py                          # CPU: the tiny suite's model
    python bench/train.py --shape alpaca           # CPU: the two cuts, Alpaca-shaped lengths
    python bench/train.py --preset tinyllama       # GPU: 1.1B (TinyLlama shape), 16 x 800
    python bench/train.py --adapter lora --preset smollm2   # LoRA against full fine-tuning

--adapter lora: full fine-tuning against LoRA (lora.py's defaults: r 8, alpha 16, the
attention projections), both `ordermerge train` on the same rows, alternating: real
tokens per second and peak memory of each run (on a GPU the allocator's peak; on the CPU
the growth of the resident set over the run, each run in a process of its own, so
that one run's peak does not hide the other's).

Prints the figures and writes results/bench/train.json (or train-<shape>.json).
"""
from __future__ import annotations

import argparse
import json
import math
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
from ordermerge.schema import train_defaults  # noqa: E402
from ordermerge.sft import SFTRun  # noqa: E402
from ordermerge.train import collate, encode_example, token_losses  # noqa: E402

# Token lengths of a row (bos + prompt + target + eos) as log-normal fits, clipped to
# [lo, hi]: median exp(mu), log-scale spread sigma.
#  gsm8k: fitted to the real train split (7,473 rows) in the task's prompt format with the
#    SmolLM2 tokenizer (digits one token each, as Llama's): median 180, sigma 0.344; the real
#    5/50/95/100th percentiles are 104/179/324/544 tokens.
#  alpaca: a synthetic fit (the real data is not on these machines): the Alpaca prompt
#    template (~40 tokens) plus instruction, optional input and an output from one word to
#    essays; median 120, sigma 0.75 (95th percentile ~410, 99th ~690), cut at the paper's
#    max_length 1200.
SHAPES = {"gsm8k": {"median": 180.0, "sigma": 0.344, "lo": 72, "hi": 800},
          "alpaca": {"median": 120.0, "sigma": 0.75, "lo": 24, "hi": 1200}}

# the shaped comparison's batches: the paper's Alpaca/GSM8K global batch of 64 rows cut into
# micro-batches of 8 (config/paper.yaml), 8 optimizer steps
SHAPED = {"batch": 64, "micro": 8, "rows": 512}

PRESETS = {
    # SmolLM2-135M's shape (the real-model tier's model: tied embeddings, 3 key-value heads)
    "smollm2": {"arch": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                         "num_attention_heads": 9, "num_key_value_heads": 3,
                         "max_position_embeddings": 2048, "tie_word_embeddings": True,
                         "vocab_size": 49152},
                "vocab": 384, "rows": 64, "length": 192, "batch": 8, "micro": 8},
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


def digit_row(i: int, total: int, rng: random.Random) -> dict:
    """A row of `total` random digits (one token each with the bench tokenizer), a quarter
    of them the prompt."""
    p = total // 4
    return {"id": f"bench:{i:06d}",
            "prompt": "".join(rng.choice("0123456789") for _ in range(p)),
            "target": "".join(rng.choice("0123456789") for _ in range(total - p))}


def digit_rows(n: int, length: int, seed: int) -> list[dict]:
    """Rows of 75-100% of `length` digits."""
    rng = random.Random(seed)
    return [digit_row(i, rng.randint(int(length * 0.75), length - 2), rng) for i in range(n)]


def shaped_rows(n: int, shape: dict, seed: int) -> list[dict]:
    """Rows whose encoded lengths follow `shape`: a log-normal draw, clipped, minus bos and
    eos."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        total = round(math.exp(rng.gauss(math.log(shape["median"]), shape["sigma"])))
        rows.append(digit_row(i, min(max(total, shape["lo"]), shape["hi"]) - 2, rng))
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
                   out: Path) -> dict:
    """One `ordermerge train` run (one epoch in data order); its run.json summary. With
    cfg["adapter"], a LoRA run (lora.wrap, as sft.load_run does)."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if cfg.get("adapter") is not None:
        from ordermerge.lora import wrap
        model = wrap(model, cfg["adapter"], seed=0)
    run = SFTRun(model, tokenizer, train_rows=rows, validation_rows=val, task=TASK,
                 order=[[r["id"] for r in rows]], cfg=cfg, save_dtype=torch.bfloat16, out_dir=out,
                 provenance={"rule": "bench", "params": cfg, "seeds": {}, "inputs": []},
                 log=lambda m: None)
    return run.run()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_base(preset: dict, tokenizer, path: Path, max_length: int) -> None:
    arch = dict(preset["arch"])
    vocab = arch.pop("vocab_size", None)
    arch["max_position_embeddings"] = max(arch["max_position_embeddings"], max_length)
    model = build_tiny(arch, tokenizer, seed=0)
    if vocab:  # a full-size embedding, whatever the tokenizer's own size
        model.resize_token_embeddings(vocab)
    path.mkdir()
    save_model(model, tokenizer, path, torch.bfloat16)


def digits_tokenizer(rows: list[dict], vocab: int):
    return train_tokenizer([r["prompt"] + r["target"] for r in rows[:200]] + ["0123456789"] * 10,
                           vocab)


def uniform_setup(args, preset: dict):
    """The uniform comparisons' rows (train, 16 validation), tokenizer and train settings."""
    rows = digit_rows((args.rows or preset["rows"]) + 16, preset["length"], seed=0)
    cfg = {**train_defaults(), "lr": 1e-4, "batch_size": preset["batch"], "micro_batch_size": preset["micro"],
           "max_length": preset["length"], "warmup_ratio": 0.03}
    return rows[:-16], rows[-16:], digits_tokenizer(rows, preset["vocab"]), cfg


def compare_loop(args, preset: dict, device: torch.device) -> dict:
    """`ordermerge train` against the plain loop, uniform lengths."""
    train, val, tokenizer, cfg = uniform_setup(args, preset)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        build_base(preset, tokenizer, base, cfg["max_length"])
        plain, ours = [], []
        for r in range(args.repeats):
            plain.append(plain_loop(base, train, tokenizer, cfg, device))
            ours.append(ordermerge_run(base, train, val, tokenizer, cfg, Path(tmp) / f"run{r}")["tokens_per_s"])
            print(f"repeat {r}: plain loop {plain[-1]:.0f} tokens/s, ordermerge train {ours[-1]:.0f}",
                  flush=True)
    report = {"rows": len(train), "batch_size": cfg["batch_size"],
              "micro_batch_size": cfg["micro_batch_size"], "max_length": cfg["max_length"],
              "tokens_per_s": statistics.median(ours),
              "plain_loop_tokens_per_s": statistics.median(plain),
              "runs": {"tokens_per_s": ours, "plain_loop_tokens_per_s": plain}}
    report["ratio"] = report["tokens_per_s"] / report["plain_loop_tokens_per_s"]
    print(f"ordermerge train {report['tokens_per_s']:.0f} tokens/s, plain loop "
          f"{report['plain_loop_tokens_per_s']:.0f} tokens/s, ratio {report['ratio']:.2f}")
    return report


def compare_cuts(args, preset: dict, shape_name: str) -> dict:
    """The plain cut against the length-aware cut, both `ordermerge train`, on shaped lengths."""
    shape = SHAPES[shape_name]
    rows = shaped_rows((args.rows or SHAPED["rows"]) + 16, shape, seed=0)
    train, val = rows[:-16], rows[-16:]
    tokenizer = digits_tokenizer(rows, preset["vocab"])
    mB = args.micro or SHAPED["micro"]
    cfg = {**train_defaults(), "lr": 1e-4, "batch_size": args.batch or SHAPED["batch"],
           "micro_batch_size": mB, "max_length": shape["hi"], "warmup_ratio": 0.03}
    cuts = {"plain": cfg, "tokens": {**cfg, "micro_batch_tokens": mB * shape["hi"]}}
    runs: dict[str, list[dict]] = {k: [] for k in cuts}
    steps: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        build_base(preset, tokenizer, base, cfg["max_length"])
        for r in range(args.repeats):
            for name, c in cuts.items():
                out = Path(tmp) / f"{name}{r}"
                runs[name].append(ordermerge_run(base, train, val, tokenizer, c, out))
                steps[name] = [json.loads(x)["ids"] for x in (out / "steps.jsonl").read_text().splitlines()]
            print(f"repeat {r}: " + ", ".join(
                f"{n} cut {runs[n][-1]['tokens_per_s']:.0f} real tokens/s "
                f"(efficiency {runs[n][-1]['padding_efficiency']:.3f})" for n in cuts), flush=True)
    lengths = sorted(len(r["prompt"]) + len(r["target"]) + 2 for r in train)
    report = {"shape": {**shape, "name": shape_name},
              "lengths": {q: lengths[min(len(lengths) - 1, int(q / 100 * len(lengths)))]
                          for q in (0, 5, 50, 95, 100)},
              "rows": len(train), "batch_size": cfg["batch_size"], "micro_batch_size": mB,
              "micro_batch_tokens": cuts["tokens"]["micro_batch_tokens"],
              "max_length": cfg["max_length"], "same_steps": steps["plain"] == steps["tokens"]}
    for name in cuts:
        report[name] = {"padding_efficiency": runs[name][0]["padding_efficiency"],
                        "processed_tokens": runs[name][0]["processed_tokens"],
                        "real_tokens": runs[name][0]["real_tokens"],
                        "tokens_per_s": statistics.median(x["tokens_per_s"] for x in runs[name]),
                        "runs_tokens_per_s": [x["tokens_per_s"] for x in runs[name]]}
    report["ratio"] = report["tokens"]["tokens_per_s"] / report["plain"]["tokens_per_s"]
    print(f"{shape_name}: padding efficiency {report['plain']['padding_efficiency']:.3f} -> "
          f"{report['tokens']['padding_efficiency']:.3f}; real tokens/s "
          f"{report['plain']['tokens_per_s']:.0f} -> {report['tokens']['tokens_per_s']:.0f} "
          f"({report['ratio']:.2f}x); same rows every step: {report['same_steps']}")
    return report


def _rss_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measured_run(base, rows, val, tokenizer, cfg, out, device) -> dict:
    """ordermerge_run with its peak memory: on a GPU the allocator's peak (GiB); on the CPU
    in a child process of its own, the growth of its resident set over the run (MB)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        summary = ordermerge_run(base, rows, val, tokenizer, cfg, out)
        return {"tokens_per_s": summary["tokens_per_s"],
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    import multiprocessing as mp
    ctx = mp.get_context("spawn")  # a fork of a process whose OpenMP threads ran can hang
    q = ctx.Queue()
    proc = ctx.Process(target=_child_run, args=(q, base, rows, val, tokenizer, cfg, out,
                                                torch.get_num_threads()))
    proc.start()
    result = q.get()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"the measured run exited with {proc.exitcode}")
    return result


def _child_run(q, base, rows, val, tokenizer, cfg, out, threads) -> None:
    torch.set_num_threads(threads)
    start = _rss_mb("VmRSS")
    summary = ordermerge_run(base, rows, val, tokenizer, cfg, out)
    q.put({"tokens_per_s": summary["tokens_per_s"], "peak_growth_mb": _rss_mb("VmHWM") - start})


def compare_adapter(args, preset: dict, device: torch.device) -> dict:
    """Full fine-tuning against LoRA: the same rows, `ordermerge train`, alternating."""
    from ordermerge.lora import settings
    train, val, tokenizer, cfg = uniform_setup(args, preset)
    adapter = {"kind": "lora", **settings({})}
    kinds = {"full": cfg, "lora": {**cfg, "lr": 1e-3, "adapter": adapter}}
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        build_base(preset, tokenizer, base, cfg["max_length"])
        for r in range(args.repeats):
            for name, c in kinds.items():
                runs[name].append(measured_run(base, train, val, tokenizer, c, Path(tmp) / f"{name}{r}", device))
            print(f"repeat {r}: " + ", ".join(f"{n} {runs[n][-1]}" for n in kinds), flush=True)
    mem = "peak_gib" if device.type == "cuda" else "peak_growth_mb"
    report = {"rows": len(train), "batch_size": cfg["batch_size"], "micro_batch_size": cfg["micro_batch_size"],
              "max_length": cfg["max_length"], "adapter": adapter, "memory": mem}
    for name in kinds:
        report[name] = {"tokens_per_s": statistics.median(x["tokens_per_s"] for x in runs[name]),
                        mem: statistics.median(x[mem] for x in runs[name]), "runs": runs[name]}
    report["speed_ratio"] = report["lora"]["tokens_per_s"] / report["full"]["tokens_per_s"]
    report["memory_ratio"] = report["lora"][mem] / report["full"][mem]
    print(f"full {report['full']['tokens_per_s']:.0f} real tokens/s, {mem} {report['full'][mem]:.1f}; "
          f"LoRA {report['lora']['tokens_per_s']:.0f}, {report['lora'][mem]:.1f}; LoRA/full: speed "
          f"{report['speed_ratio']:.2f}x, memory {report['memory_ratio']:.2f}x")
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="tiny on the CPU, tinyllama on a GPU (default by device)")
    p.add_argument("--shape", choices=["uniform", *sorted(SHAPES)], default="uniform",
                   help="uniform: ordermerge train vs a plain loop; gsm8k/alpaca: the plain vs "
                        "the length-aware micro-batch cut on that dataset's length distribution")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows", type=int, help="training rows (one epoch)")
    p.add_argument("--batch", type=int, help=f"global batch (shaped runs; default {SHAPED['batch']})")
    p.add_argument("--micro", type=int, help=f"micro_batch_size (shaped runs; default {SHAPED['micro']})")
    p.add_argument("--adapter", choices=["lora"], help="compare full fine-tuning with LoRA runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="default results/bench/train[-<shape>].json")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset_name = args.preset or ("tinyllama" if device.type == "cuda" else "tiny")
    preset = PRESETS[preset_name]
    torch.set_num_threads(args.threads)
    if args.adapter:
        report = compare_adapter(args, preset, device)
    elif args.shape == "uniform":
        report = compare_loop(args, preset, device)
    else:
        report = compare_cuts(args, preset, args.shape)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({args.threads} threads)"
    report.update(device=name, preset=preset_name, date=time.strftime("%Y-%m-%d"),
                  repeats=args.repeats)
    if device.type == "cuda":
        report["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    out = args.json or ROOT / "results/bench" / (
        f"train-{args.adapter}.json" if args.adapter else
        "train.json" if args.shape == "uniform" else f"train-{args.shape}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"{name}, {preset_name}; wrote {out}")


if __name__ == "__main__":
    main()
