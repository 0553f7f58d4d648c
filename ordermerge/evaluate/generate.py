"""Batched greedy generation, shared by all evaluators."""
from __future__ import annotations

import torch

from ..train import length_batches, mask_of, pad


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: list[str], *, max_new_tokens: int,
                    batch_size: int, stop: list[str] = ()) -> list[str]:
    """Greedy completions of `prompts`, left-padded in batches, cut at the first stop string.

    Prompts are sorted by length so each batch pads little; outputs come back
    in the input order.
    """
    model.eval()
    encoded = [[tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False)["input_ids"]
               for p in prompts]
    outputs: list[str] = [""] * len(prompts)
    pad_id = tokenizer.pad_token_id
    for idx in length_batches([len(e) for e in encoded], batch_size):
        rows = [encoded[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = pad(rows, pad_id, left=True).to(model.device)
        mask = mask_of(rows, left=True).to(model.device)
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                             eos_token_id=tokenizer.eos_token_id)
        for row, i in enumerate(idx):
            text = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
            for s in stop:
                text = text.split(s, 1)[0]
            outputs[i] = text
    return outputs
