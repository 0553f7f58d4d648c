"""Batched greedy generation, shared by all evaluators."""
from __future__ import annotations

import torch


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
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    pad = tokenizer.pad_token_id
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(encoded[i])
            ids[row, width - n:] = torch.tensor(encoded[i])
            mask[row, width - n:] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id)
        for row, i in enumerate(idx):
            text = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
            for s in stop:
                text = text.split(s, 1)[0]
            outputs[i] = text
    return outputs
