"""Training pieces: encoding with response-only labels, padding to the longest row (and the
length-sorted batches of the evaluation passes), cutting a global batch into micro-batches
(plain or by a token budget), per-row token losses, the learning-rate schedule, and the tiny
base's pretraining. The SFT run itself is in sft.py."""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from .utils import derive_seed

IGNORE = -100


def encode_example(prompt: str, target: str, tokenizer, max_length: int) -> dict:
    """Token ids of bos + prompt + target + eos; labels mask bos and prompt."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = [tokenizer.bos_token_id] + p + t
    labels = [IGNORE] * (1 + len(p)) + t
    return {"input_ids": ids[:max_length], "labels": labels[:max_length],
            "truncated": len(ids) > max_length}


def pad(rows: list[list[int]], fill: int, left: bool = False) -> torch.Tensor:
    """Token rows as one long tensor, padded with `fill` to the longest row: on the right
    (training, scoring) or on the left (generation)."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            (out[i, width - len(r):] if left else out[i, :len(r)]).copy_(torch.tensor(r))
    return out


def mask_of(rows: list[list[int]], left: bool = False) -> torch.Tensor:
    """The attention mask of `pad(rows, ...)`: 1 on tokens, 0 on padding."""
    lengths = torch.tensor([len(r) for r in rows])[:, None]
    pos = torch.arange(int(lengths.max()))
    return (pos >= len(pos) - lengths if left else pos < lengths).long()


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (ties in input order), cut every `batch_size`: batches that
    pad little, for passes whose results are put back in input order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[b:b + batch_size] for b in range(0, len(order), batch_size)]


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest row."""
    ids = [e["input_ids"] for e in examples]
    return {"input_ids": pad(ids, pad_id), "labels": pad([e["labels"] for e in examples], IGNORE),
            "attention_mask": mask_of(ids)}


def micro_batches(lengths: list[int], size: int, tokens: int | None = None) -> list[list[int]]:
    """Cut one process's share of a global batch (row lengths in tokens, in data order) into
    micro-batches; returns each micro-batch's indices into `lengths`.

    tokens None: the plain cut, `size` consecutive rows each. tokens N: the length-aware cut.
    Rows are sorted by length (longest first, ties in data order) and cut into consecutive
    runs, each within N padded tokens (rows x its longest row), with the least padding in
    all, using no more micro-batches than the plain cut (ceil(rows / size)) unless the budget
    needs more (a row longer than N goes alone). When the plain cut fits the budget too
    (N >= size x the longest row, as with N = micro_batch_size x max_length), cutting the
    sorted rows with the plain cut's run sizes is one candidate, so it never pads more than
    the plain cut. Either
    cut trains on the same rows with the same summed loss: only the padding and the grouping
    of the forward passes change."""
    n = len(lengths)
    if tokens is None:
        return [list(range(m, min(m + size, n))) for m in range(0, n, size)]
    if n == 0:
        return []
    rows = sorted(range(n), key=lambda j: (-lengths[j], j))
    L = [lengths[j] for j in rows]
    inf = float("inf")
    # cost[i]: least padded tokens over rows[:i] in k runs; cut[k][i]: where its last run starts
    cost = [0.0] + [inf] * n
    cuts: list[list[int]] = []
    k_plain = -(-n // size)
    while True:
        new, back = [inf] * (n + 1), [-1] * (n + 1)
        for i in range(1, n + 1):
            for j in range(i - 1, -1, -1):  # the run rows[j:i], padded to L[j]
                if (i - j) * L[j] > tokens and i - j > 1:
                    break  # longer runs only pad more
                c = cost[j] + (i - j) * L[j]
                if c < new[i]:
                    new[i], back[i] = c, j
        cost = new
        cuts.append(back)
        if len(cuts) >= k_plain and cost[n] < inf:
            break
    out, i = [], n
    for back in reversed(cuts):
        j = back[i]
        out.append(rows[j:i])
        i = j
    return out[::-1]


def token_losses(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token loss and number of target tokens, per row."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    ce = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE,
                         reduction="none")
    return ce.sum(dim=1), (labels != IGNORE).sum(dim=1)


def lr_lambda(total_steps: int, warmup_ratio: float, schedule: str):
    warmup = int(math.ceil(warmup_ratio * total_steps))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "linear":
            return 1.0 - progress
        if schedule == "constant":
            return 1.0
        raise ValueError(f"unknown lr schedule {schedule!r} (cosine, linear, constant)")
    return f


def make_optimizer(model, cfg: dict, total_steps: int, fused: bool | None = None):
    """AdamW (betas 0.9, 0.999) with the warmup + decay schedule of `cfg` over `total_steps`."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                            betas=(0.9, 0.999), fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(total_steps, cfg["warmup_ratio"], cfg["schedule"]))
    return opt, sched


def optimizer_step(model, opt, sched, max_grad_norm: float) -> None:
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def pretrain(model, tokenizer, lines: list[str], cfg: dict, seed: int, log) -> list[float]:
    """Causal-LM pretraining on random windows of the packed corpus; returns the loss curve."""
    stream: list[int] = []
    for line in lines:
        stream += [tokenizer.bos_token_id] + tokenizer(line, add_special_tokens=False)["input_ids"]
        stream.append(tokenizer.eos_token_id)
    L = cfg["max_length"]
    if len(stream) <= L:
        raise ValueError(f"pretraining corpus has {len(stream)} tokens, fewer than max_length {L}")
    data = torch.tensor(stream)
    rng = random.Random(derive_seed(seed, "pretrain-windows"))

    def loss_of_step(step: int) -> torch.Tensor:
        starts = [rng.randrange(0, len(stream) - L) for _ in range(cfg["batch_size"])]
        ids = torch.stack([data[s:s + L] for s in starts])
        return model(input_ids=ids, labels=ids).loss
    return run_steps(model, cfg, loss_of_step, log, "pretrain")


def run_steps(model, cfg: dict, loss_of_step, log, label: str) -> list[float]:
    """cfg["steps"] optimizer steps on `loss_of_step(step)` (AdamW, warmup + schedule,
    clipping); returns the loss curve, logging every 50 steps."""
    opt, sched = make_optimizer(model, cfg, cfg["steps"])
    model.train()
    curve = []
    for step in range(cfg["steps"]):
        loss = loss_of_step(step)
        loss.backward()
        optimizer_step(model, opt, sched, cfg["max_grad_norm"])
        curve.append(loss.item())
        if step % 50 == 0 or step == cfg["steps"] - 1:
            log(f"{label} step {step} loss {loss.item():.4f}")
    return curve


def make_base(cfg: dict, out_dir, tokenizer_dir=None, corpus=None, log=print) -> list:
    """The shared decoder base, saved into `out_dir` in `cfg["dtype"]`: for source tiny the
    model built from the tokenizer and pretrained on the corpus (its loss curve written
    beside it, pretrain_log.json), else the pretrained source. Returns the input files used."""
    from pathlib import Path

    from .models import build_tiny, dtype_of, load_pretrained_source, save_model
    out_dir = Path(out_dir)
    if cfg["source"] != "tiny":
        model, tokenizer = load_pretrained_source(cfg["source"], cfg["dtype"], "model.source")
        save_model(model, tokenizer, out_dir, dtype_of(cfg["dtype"]))
        return []
    import json

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = build_tiny(cfg["tiny"], tokenizer, cfg["seed"])
    n_params = sum(p.numel() for p in model.parameters())
    log(f"tiny llama: {n_params} parameters")
    curve = pretrain(model, tokenizer, Path(corpus).read_text().splitlines(), cfg["pretrain"],
                     cfg["seed"], log)
    (out_dir / "pretrain_log.json").write_text(json.dumps(
        {"parameters": n_params, "loss": curve}, indent=1) + "\n")
    save_model(model, tokenizer, out_dir, dtype_of(cfg["dtype"]))
    return [Path(tokenizer_dir), Path(corpus)]
