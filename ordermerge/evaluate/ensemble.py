"""The ensemble of the K runs: not a merge, but the bound a merge of them is read against.

At every position the K models' next-token (or class, or span-boundary) distributions are
averaged:

    log p_ens(y | x) = log (1/K) sum_k p_k(y | x) = logsumexp_k log_softmax(l_k) - log K

in float32. `Ensemble` is a module whose outputs carry these log-probabilities in place of
logits, so every evaluator of evaluate/handlers.py scores it as it scores one model:
log-likelihood choices sum the ensemble's token log-probabilities (the log of the averaged
distribution at each token), classification and span extraction take the averaged class
and boundary distributions, and generation is greedy on the averaged next-token
distribution (`generate`: the K models step together, each with its own KV cache, as
transformers' greedy search steps one model: left padding, positions from the attention
mask, padding after EOS).

Memory: the K models at once (evaluate_model loads them). A K = 20 ensemble of 7B models
needs 270 GB of bf16 weights: beyond one GPU (config/paper.yaml leaves it off).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F

HEADS = ("logits", "start_logits", "end_logits")


class Ensemble(torch.nn.Module):
    def __init__(self, models: list):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = torch.nn.ModuleList(models)
        self.config = models[0].config

    @property
    def device(self):
        return next(self.members[0].parameters()).device

    @staticmethod
    def average(outputs: list, key: str) -> torch.Tensor:
        """The log of the K outputs' averaged distributions over their last dimension."""
        logp = torch.stack([F.log_softmax(getattr(o, key).float(), dim=-1) for o in outputs])
        return torch.logsumexp(logp, dim=0) - math.log(len(outputs))

    def forward(self, **inputs):
        outputs = [m(**inputs) for m in self.members]
        return SimpleNamespace(**{k: self.average(outputs, k) for k in HEADS
                                  if getattr(outputs[0], k, None) is not None})

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, *, max_new_tokens: int, pad_token_id: int,
                 eos_token_id, do_sample: bool = False, **extra):
        """Greedy decoding on the averaged next-token distribution; returns the sequences
        ([B, prompt + new], as transformers' generate does without return_dict)."""
        if do_sample or extra:
            raise ValueError(f"Ensemble.generate: greedy only (got do_sample={do_sample}, {sorted(extra)})")
        eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
        ids, mask = input_ids, attention_mask
        positions = (mask.long().cumsum(-1) - 1).masked_fill_(mask == 0, 1)
        caches = [None] * len(self.members)
        step_ids, step_pos = ids, positions
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            outs = []
            for k, m in enumerate(self.members):
                o = m(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                      cache=caches[k], use_cache=True)
                caches[k] = o.cache
                outs.append(SimpleNamespace(logits=o.logits[:, -1, :]))
            nxt = self.average(outs, "logits").argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            done |= torch.isin(nxt, torch.tensor(sorted(eos), device=nxt.device)) if eos else done
            if bool(done.all()):
                break
            step_ids, step_pos = nxt[:, None], positions[:, -1:] + 1
            positions = torch.cat([positions, step_pos], 1)
        return ids
