"""Batched greedy generation: the evaluators' `generate_greedy` against a plain batched
`model.generate`, side by side in one run.

Both generate greedily (temperature 0) for the same prompts with the same batch size and
max new tokens. The plain loop takes the prompts in their given order, left-pads each
batch and calls `model.generate`; `generate_greedy` (ordermerge/evaluate/generate.py)
sorts prompts by length so each batch pads little, cuts at stop strings and returns the
outputs in input order. Figures: new tokens per second (the tokens generated up to each
row's end of sequence; both produce the same greedy tokens, counted once from the plain
run, and the report says how many outputs agree), the median of --repeats, alternating.
The report also lists the outputs that differ and, from one more untimed pass, each
prompt's smallest top-2 logit gap relative to its largest logit (min_margin): two batchings
of one forward can differ only where a greedy choice was that near a tie.

    python bench/generate.py                       # CPU: a tiny Llama, 256 prompts
    python bench/generate.py --preset tinyllama    # GPU: 1.1B (TinyLlama shape), bf16
    python bench/generate.py --model models/SmolLM2-135M-Instruct   # a real checkpoint

With --model (a save_pretrained directory, e.g. from `ordermerge gguf`) the prompts are
toy GSM8K questions in the gsm8k task's prompt format, tokenized by the model's own
tokenizer, as the evaluate rule gives them.

Prints the figures and writes results/bench/generate.json (device, new_tokens_per_s,
plain_new_tokens_per_s, ratio).

    python bench/generate.py --backend vllm        # the vllm backend against generate_greedy

With --backend vllm the same prompts go through the evaluate rule's two backends, alternating
repeats: `generate_greedy` (transformers) and the vllm backend's session (one engine for all
repeats, in the Python of $ORDERMERGE_VLLM_PYTHON; docs/vllm.md). The engine's
start-up is reported on its own (start_s), not in the throughput; the throughput of each
backend counts its own new tokens (up to each row's end of sequence) over the wall time of
the call, IPC and decoding included. The random preset's model is saved to a temporary
directory first, since vLLM loads checkpoints from disk. Writes results/bench/generate-vllm.json
(vllm_new_tokens_per_s, hf_new_tokens_per_s, ratio, start_s, same_outputs).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
hf_logging.disable_progress_bar()

from ordermerge.evaluate.backends import BACKENDS  # noqa: E402
from ordermerge.evaluate.generate import generate_greedy, greedy_ids  # noqa: E402
from ordermerge.models import build_tiny, train_tokenizer  # noqa: E402

PRESETS = {
    "tiny": {"arch": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
                      "num_attention_heads": 4, "max_position_embeddings": 512,
                      "tie_word_embeddings": False},
             "prompts": 256, "batch": 64, "new_tokens": 32},
    "tinyllama": {"arch": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                           "num_attention_heads": 32, "num_key_value_heads": 4,
                           "max_position_embeddings": 2048, "tie_word_embeddings": False},
                  "prompts": 256, "batch": 64, "new_tokens": 128},
}


def task_prompts(n: int, seed: int) -> list[str]:
    """n toy GSM8K test questions in the gsm8k task's prompt format."""
    from ordermerge.data.prepare import prepare
    from ordermerge.data.registry import get_task
    rows = prepare("gsm8k", {"source": "toy", "n_train": 1, "n_validation": 1, "n_test": n},
                   seed=seed, config_key="bench")["test"]
    task = get_task("gsm8k")
    return [task.prompt(r) for r in rows]


def prompts_of(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ["apples", "pens", "books", "Tom", "Ann", "has", "gets", "more", "how", "many"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 60))) + "\nAnswer:"
            for _ in range(n)]


@torch.no_grad()
def plain(model, tokenizer, prompts: list[str], batch: int, new_tokens: int) -> list[list[int]]:
    """The least batched generation: prompts in order, left-padded, model.generate."""
    out = []
    pad = tokenizer.pad_token_id
    for b in range(0, len(prompts), batch):
        enc = [[tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False)["input_ids"]
               for p in prompts[b:b + batch]]
        width = max(map(len, enc))
        ids = torch.full((len(enc), width), pad, dtype=torch.long, device=model.device)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, width - len(e):] = torch.tensor(e)
            mask[i, width - len(e):] = 1
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                             max_new_tokens=new_tokens, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id)
        out += [row[width:].tolist() for row in gen]
    return out


def new_tokens_of(seqs: list[list[int]], eos: int) -> int:
    """Generated tokens up to each row's first end of sequence (what follows is padding)."""
    n = 0
    for s in seqs:
        n += s.index(eos) if eos in s else len(s)
    return n


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    """(fn(), its wall seconds, the device's queued work included)."""
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--model", type=Path, help="a checkpoint directory instead of a preset's random model")
    p.add_argument("--prompts", type=int, help="number of prompts (default the preset's)")
    p.add_argument("--batch", type=int, help="batch size (default the preset's)")
    p.add_argument("--new-tokens", type=int, help="max new tokens (default the preset's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="default results/bench/generate.json, or "
                                               "generate-vllm.json with --backend vllm")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="hf",
                   help="hf: generate_greedy against plain generate; vllm: the vllm backend "
                        "against generate_greedy")
    p.add_argument("--eager", action="store_true",
                   help="vLLM on a GPU without CUDA graphs and compilation (always on the CPU)")
    p.add_argument("--memory-share", type=float,
                   help="vLLM's share of the device's memory (default 0.9 on a GPU, 0.1 on the CPU)")
    args = p.parse_args()
    args.json = args.json or ROOT / "results/bench" / (
        "generate.json" if args.backend == "hf" else "generate-vllm.json")
    cuda = torch.cuda.is_available()
    preset_name = args.preset or ("tinyllama" if cuda else "tiny")
    cfg = dict(PRESETS[preset_name])
    cfg.update({k: v for k, v in (("prompts", args.prompts), ("batch", args.batch),
                                  ("new_tokens", args.new_tokens)) if v is not None})
    torch.set_num_threads(args.threads)
    if args.model:
        from ordermerge.models import load_model
        prompts = task_prompts(cfg["prompts"], 0)
        model, tok = load_model(args.model, torch.bfloat16 if cuda else torch.float32)
        model.eval()
        preset_name = f"{args.model.name} (gsm8k prompts)"
    else:
        prompts = prompts_of(cfg["prompts"], 0)
        tok = train_tokenizer(prompts[:100], 384)
        torch.manual_seed(0)
        model = build_tiny(cfg["arch"], tok, seed=0).eval()
    if cuda:
        model = model.to("cuda", torch.bfloat16)
    if args.backend == "vllm":
        return against_vllm(args, model, tok, prompts, cfg, preset_name)
    ours_t, plain_t = [], []
    ours_n = plain_n = 0
    for r in range(args.repeats):
        texts, t = timed(lambda: generate_greedy(model, tok, prompts, batch_size=cfg["batch"],
                                                 max_new_tokens=cfg["new_tokens"]))
        ours_t.append(t)
        seqs, t = timed(lambda: plain(model, tok, prompts, cfg["batch"], cfg["new_tokens"]))
        plain_t.append(t)
        plain_n = new_tokens_of(seqs, tok.eos_token_id)
        # both generate the same greedy tokens: count them once, from the plain run's ids
        differ = [i for i, (a, s) in enumerate(zip(texts, seqs))
                  if a != tok.decode(s[:s.index(tok.eos_token_id)] if tok.eos_token_id in s else s,
                                     skip_special_tokens=True)]
        same = len(prompts) - len(differ)
        ours_n = plain_n
        print(f"repeat {r}: generate_greedy {ours_n / ours_t[-1]:.0f} new tokens/s, "
              f"plain {plain_n / plain_t[-1]:.0f}", flush=True)
    # how near a tie each prompt's greedy path came (one untimed pass): two batchings of one
    # forward can differ only where a choice was a near tie
    margins = []
    ids = greedy_ids(model, tok, prompts, max_new_tokens=cfg["new_tokens"], batch_size=cfg["batch"],
                     margins=margins)
    ends = [x.index(tok.eos_token_id) + 1 if tok.eos_token_id in x else len(x) for x in ids]
    name = torch.cuda.get_device_name() if cuda else f"cpu ({args.threads} threads)"
    report = {"device": name, "preset": preset_name, "date": time.strftime("%Y-%m-%d"),
              "prompts": len(prompts), "batch_size": cfg["batch"], "max_new_tokens": cfg["new_tokens"],
              "new_tokens": ours_n, "same_outputs": same, "differ": differ,
              "min_margin": [min(m[:e]) for m, e in zip(margins, ends)],
              "config": {k: model.config.to_dict()[k] for k in
                         ("num_hidden_layers", "hidden_size", "intermediate_size")},
              "longest": max(len(tok(p)["input_ids"]) for p in prompts) + 1 + cfg["new_tokens"],
              "new_tokens_per_s": ours_n / statistics.median(ours_t),
              "plain_new_tokens_per_s": plain_n / statistics.median(plain_t),
              "runs_s": {"generate_greedy": ours_t, "plain": plain_t}}
    report["ratio"] = report["new_tokens_per_s"] / report["plain_new_tokens_per_s"]
    print(f"{name}: generate_greedy {report['new_tokens_per_s']:.0f} new tokens/s, plain batched "
          f"generate {report['plain_new_tokens_per_s']:.0f}, ratio {report['ratio']:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.json}")


def against_vllm(args, model, tok, prompts, cfg, preset_name) -> None:
    """generate_greedy and the vllm backend on the same prompts, alternating repeats."""
    import tempfile

    from ordermerge.evaluate.generate import completion_text
    from ordermerge.evaluate.vllm_backend import VLLMSession
    cuda = torch.cuda.is_available()
    share = args.memory_share or (0.9 if cuda else 0.1)
    settings = {"gpu_memory_utilization": share, "cpu_memory_utilization": share,
                "enforce_eager": args.eager or not cuda, "max_num_seqs": 256, "max_model_len": None}
    eos = tok.eos_token_id
    with tempfile.TemporaryDirectory() as tmp, VLLMSession(threads=args.threads) as vllm:
        path = args.model
        if path is None:  # the random preset: vLLM loads from disk
            path = Path(tmp) / "model"
            model.save_pretrained(path)
            tok.save_pretrained(path)
        t0 = time.perf_counter()
        vllm.generate(path, tok, prompts[:1], max_new_tokens=1, settings=settings)
        start_s = time.perf_counter() - t0
        print(f"vLLM engine start-up {start_s:.1f} s (engine {vllm.last['load_s']:.1f} s)",
              flush=True)
        hf_t, vl_t = [], []
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for r in range(args.repeats):
            hf_ids, t = timed(lambda: greedy_ids(model, tok, prompts, batch_size=cfg["batch"],
                                                 max_new_tokens=cfg["new_tokens"]))
            hf_t.append(t)
            texts, t = timed(lambda: vllm.generate(path, tok, prompts, settings=settings,
                                                   max_new_tokens=cfg["new_tokens"]))
            vl_t.append(t)
            vl_ids = vllm.last["outputs"]
            hf_n, vl_n = new_tokens_of(hf_ids, eos), new_tokens_of(vl_ids, eos)
            print(f"repeat {r}: generate_greedy {hf_n / hf_t[-1]:.0f} new tokens/s, "
                  f"vllm {vl_n / vl_t[-1]:.0f}", flush=True)
        same = sum(completion_text(tok, h, ()) == v for h, v in zip(hf_ids, texts))
        info = vllm.info
        memory = {}
        if cuda:  # the engine lives in other processes: the device's use, less this process's
            free, total = torch.cuda.mem_get_info()
            memory = {"hf_peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                      "vllm_device_gib": (total - free - torch.cuda.memory_reserved()) / 2**30}
    name = torch.cuda.get_device_name() if cuda else f"cpu ({args.threads} threads)"
    report = {"device": name, "preset": preset_name, "date": time.strftime("%Y-%m-%d"),
              "prompts": len(prompts), "batch_size": cfg["batch"],
              "max_new_tokens": cfg["new_tokens"], "same_outputs": same,
              "hf_new_tokens": hf_n, "vllm_new_tokens": vl_n, "start_s": start_s,
              "hf_new_tokens_per_s": hf_n / statistics.median(hf_t),
              "vllm_new_tokens_per_s": vl_n / statistics.median(vl_t),
              "vllm": info["versions"], "engine_process": vllm.last["engine_process"],
              "memory_share": share, **memory,
              "runs_s": {"generate_greedy": hf_t, "vllm": vl_t}}
    report["ratio"] = report["vllm_new_tokens_per_s"] / report["hf_new_tokens_per_s"]
    print(f"{name}: vllm {report['vllm_new_tokens_per_s']:.0f} new tokens/s, generate_greedy "
          f"{report['hf_new_tokens_per_s']:.0f}, ratio {report['ratio']:.2f}; engine start-up "
          f"{start_s:.1f} s; {same} of {len(prompts)} outputs the same")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
