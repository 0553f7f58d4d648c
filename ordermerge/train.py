"""Training: the tiny base's pretraining and one SFT run on one data order.

An SFT run reads its order (row ids per epoch), cuts each epoch into global
batches of ``batch_size`` consecutive ids, splits each into micro-batches
padded to their longest row, and takes one optimizer step per global batch.
The loss is the mean over the batch's response tokens (prompt tokens are
masked). At each epoch end a checkpoint is saved in the base model's dtype.
Per sample it records where it was seen, its loss when seen, and its loss
after training (a forward pass over the training set at the end).
"""
from __future__ import annotations

import csv
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .models import save_model
from .provenance import now, write_record
from .utils import atomic_dir, atomic_file, derive_seed

IGNORE = -100


def encode_example(prompt: str, target: str, tokenizer, max_length: int) -> dict:
    """Token ids of bos + prompt + target + eos; labels mask bos and prompt."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = [tokenizer.bos_token_id] + p + t
    labels = [IGNORE] * (1 + len(p)) + t
    return {"input_ids": ids[:max_length], "labels": labels[:max_length],
            "truncated": len(ids) > max_length}


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest row."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


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


def make_optimizer(model, cfg: dict, total_steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                            betas=(0.9, 0.999))
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
    opt, sched = make_optimizer(model, cfg, cfg["steps"])
    model.train()
    curve = []
    for step in range(cfg["steps"]):
        starts = [rng.randrange(0, len(stream) - L) for _ in range(cfg["batch_size"])]
        ids = torch.stack([data[s:s + L] for s in starts])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer_step(model, opt, sched, cfg["max_grad_norm"])
        curve.append(loss.item())
        if step % 50 == 0 or step == cfg["steps"] - 1:
            log(f"pretrain step {step} loss {loss.item():.4f}")
    return curve


@torch.no_grad()
def evaluate_losses(model, examples: dict[str, dict], ids: list[str], pad_id: int,
                    micro_batch_size: int) -> dict[str, float]:
    """Mean response-token loss per sample, in eval mode."""
    model.eval()
    out = {}
    for i in range(0, len(ids), micro_batch_size):
        chunk = ids[i:i + micro_batch_size]
        total, count = token_losses(model, collate([examples[j] for j in chunk], pad_id))
        for j, t, c in zip(chunk, total.tolist(), count.tolist()):
            out[j] = t / max(c, 1)
    model.train()
    return out


def sft(model, tokenizer, *, train_rows: list[dict], validation_rows: list[dict], task,
        order: list[list[str]], cfg: dict, save_dtype: torch.dtype, out_dir: Path,
        provenance: dict, log) -> dict:
    """One SFT run. Writes ``epoch{e}/`` checkpoints, ``samples.csv`` and ``run.json``."""
    out_dir = Path(out_dir)
    def encode(rows: list[dict]) -> dict[str, dict]:
        return {r["id"]: encode_example(task.prompt(r), task.target(r), tokenizer, cfg["max_length"])
                for r in rows}

    examples, val_examples = encode(train_rows), encode(validation_rows)
    unknown = [i for epoch in order for i in epoch if i not in examples]
    if unknown:
        raise ValueError(f"order names {len(unknown)} ids absent from the training rows, "
                         f"e.g. {unknown[:3]}")
    B, mB = cfg["batch_size"], cfg["micro_batch_size"]
    steps_per_epoch = [math.ceil(len(ids) / B) for ids in order]
    opt, sched = make_optimizer(model, cfg, sum(steps_per_epoch))
    pad = tokenizer.pad_token_id
    seen: dict[tuple[str, int], dict] = {}
    step, real_tokens, padded_tokens = 0, 0, 0
    history = []
    t0 = time.perf_counter()
    run_start = now()
    model.train()
    for epoch, ids in enumerate(order, 1):
        for b in range(0, len(ids), B):
            batch_ids = ids[b:b + B]
            n_target = sum(sum(1 for x in examples[i]["labels"][1:] if x != IGNORE)
                           for i in batch_ids)
            for m in range(0, len(batch_ids), mB):
                micro = batch_ids[m:m + mB]
                batch = collate([examples[i] for i in micro], pad)
                total, count = token_losses(model, batch)
                (total.sum() / n_target).backward()
                real_tokens += int(batch["attention_mask"].sum())
                padded_tokens += batch["input_ids"].numel()
                for pos, (i, t, c) in enumerate(zip(micro, total.tolist(), count.tolist()), b + m):
                    seen[(i, epoch)] = {"position": pos, "step": step, "loss": t / max(c, 1)}
            optimizer_step(model, opt, sched, cfg["max_grad_norm"])
            step += 1
        val = evaluate_losses(model, val_examples, list(val_examples), pad, mB)
        val_loss = sum(val.values()) / max(len(val), 1)
        history.append({"epoch": epoch, "step": step, "validation_loss": val_loss})
        log(f"epoch {epoch} step {step} validation loss {val_loss:.4f}")
        final = out_dir / f"epoch{epoch}"
        with atomic_dir(final) as tmp:
            save_model(model, tokenizer, tmp, save_dtype)
            write_record(tmp, final=final, start=run_start,
                         **{**provenance, "params": {**provenance["params"], "epoch": epoch}})
    wall = time.perf_counter() - t0
    final_loss = evaluate_losses(model, examples, list(examples), pad, mB)
    with atomic_file(out_dir / "samples.csv", "w") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "epoch", "position", "step", "loss_seen", "final_loss"])
        for (i, epoch), s in sorted(seen.items(), key=lambda kv: (kv[0][1], kv[1]["position"])):
            w.writerow([i, epoch, s["position"], s["step"], f"{s['loss']:.6f}",
                        f"{final_loss[i]:.6f}"])
    summary = {
        "steps": step, "epochs": len(order), "wall_s": wall,
        "tokens_per_s": real_tokens / wall if wall else None,
        "real_tokens": real_tokens, "processed_tokens": padded_tokens,
        "truncated_rows": sum(e["truncated"] for e in examples.values()),
        "history": history,
        "final_train_loss": sum(final_loss.values()) / len(final_loss),
    }
    with atomic_file(out_dir / "run.json") as fh:
        json.dump(summary, fh, indent=2, sort_keys=True)
    for name in ("samples.csv", "run.json"):
        write_record(out_dir / name, start=run_start, **provenance)
    return summary
