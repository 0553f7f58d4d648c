"""Batched greedy generation, shared by all evaluators: transformers (`generate_greedy`), or
vLLM through vllm_backend.py. Both encode prompts and read completions with the functions
here, so the two backends differ only in how they compute the greedy tokens."""
from __future__ import annotations

import sys

import torch

from ..train import length_batches, mask_of, pad


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Each prompt's token ids: BOS, then the text without the tokenizer's own specials."""
    return [[tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False)["input_ids"]
            for p in prompts]


def completion_text(tokenizer, ids, stop) -> str:
    """Generated ids as text (special tokens such as EOS and padding dropped), cut at the
    first stop string."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for s in stop:
        text = text.split(s, 1)[0]
    return text


def generation_info(backend: str = "hf", **versions) -> dict:
    """What an evaluation record says generated its outputs: the backend and the versions
    that computed the tokens."""
    if backend == "hf":
        import transformers
        versions = {"transformers": transformers.__version__, "torch": torch.__version__}
    return {"backend": backend, "versions": versions}


@torch.no_grad()
def greedy_ids(model, tokenizer, prompts: list[str], *, max_new_tokens: int,
               batch_size: int, margins: list | None = None) -> list[list[int]]:
    """Each prompt's greedy new token ids (up to max_new_tokens; after an EOS, padding),
    left-padded in batches of prompts sorted by length, returned in the input order.

    `margins`, a list: filled, in the input order, with each prompt's list, per generated
    token, of the gap between the largest and the second largest logit relative to the
    largest logit magnitude at that step: how near a tie each greedy choice was
    (tests/test_vllm.py reads them)."""
    model.eval()
    encoded = encode_prompts(tokenizer, prompts)
    outputs: list[list[int]] = [[] for _ in prompts]
    if margins is not None:
        margins[:] = [[] for _ in prompts]
    extra = {} if margins is None else {"output_logits": True, "return_dict_in_generate": True}
    pad_id = tokenizer.pad_token_id
    # a line in the job's log at its interval (progress.EVERY_S), on stderr: a command's
    # stdout may be its result (`ordermerge soup` prints the soup's record as JSON)
    from .. import progress
    lines = progress.Progress(len(prompts), lambda s: print(s, file=sys.stderr, flush=True),
                              every_s=progress.EVERY_S, unit="prompt")
    done = new_tokens = 0
    for idx in length_batches([len(e) for e in encoded], batch_size):
        rows = [encoded[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = pad(rows, pad_id, left=True).to(model.device)
        mask = mask_of(rows, left=True).to(model.device)
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                             eos_token_id=tokenizer.eos_token_id, **extra)
        if margins is not None:
            logits = torch.stack(gen.logits, 1).float()
            top2 = logits.topk(2, dim=-1).values
            gaps = ((top2[..., 0] - top2[..., 1]) / logits.abs().amax(-1)).tolist()
            gen = gen.sequences
        for row, i in enumerate(idx):
            outputs[i] = gen[row, width:].tolist()
            if margins is not None:
                margins[i] = gaps[row]
        done += len(idx)
        # the tokens generated up to each row's end of sequence (padding after it is not)
        new_tokens += sum(next((k + 1 for k, t in enumerate(outputs[i]) if t == tokenizer.eos_token_id),
                               len(outputs[i])) for i in idx)
        lines.update(done, count=new_tokens, count_name="new tokens")
    return outputs


def generate_greedy(model, tokenizer, prompts: list[str], *, max_new_tokens: int,
                    batch_size: int, stop: list[str] = ()) -> list[str]:
    """Greedy completions of `prompts` (`greedy_ids`), cut at the first stop string."""
    return [completion_text(tokenizer, ids, stop)
            for ids in greedy_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size)]
