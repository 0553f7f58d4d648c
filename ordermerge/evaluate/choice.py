"""Option log-likelihood scoring (lm-evaluation-harness style) for choice and classification.

Each option is scored as a continuation of the prompt, tokenised exactly as in
training (bos + prompt, then " " + option): the sum of its tokens' log
probabilities. The prediction is the option with the highest sum ("acc");
the record keeps every option's sum and its per-character mean ("acc_norm"
picks by that).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..train import length_batches, mask_of, pad


@torch.no_grad()
def option_logliks(model, tokenizer, prompts: list[str], options: list[list[str]], *,
                   batch_size: int) -> list[list[float]]:
    model.eval()
    pairs = []  # (example, option index, context ids, continuation ids)
    for e, (prompt, opts) in enumerate(zip(prompts, options)):
        ctx = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for k, opt in enumerate(opts):
            cont = tokenizer(f" {opt}", add_special_tokens=False)["input_ids"]
            if not cont:
                raise ValueError(f"option {opt!r} of example {e} has no tokens")
            pairs.append((e, k, ctx, cont))
    out = [[0.0] * len(o) for o in options]
    for idx in length_batches([len(c) + len(t) for _, _, c, t in pairs], batch_size):
        chunk = [pairs[i] for i in idx]
        seqs = [c + t for _, _, c, t in chunk]
        ids, mask = pad(seqs, tokenizer.pad_token_id), mask_of(seqs)
        device = getattr(model, "device", "cpu")
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logp = F.log_softmax(logits.float(), dim=-1).cpu()
        for row, (e, k, c, t) in enumerate(chunk):
            # token j of the continuation sits at position len(c) + j, predicted from the one before
            pos = torch.arange(len(c) - 1, len(c) - 1 + len(t))
            out[e][k] = float(logp[row, pos, torch.tensor(t)].sum())
    return out
