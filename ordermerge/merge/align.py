"""Vocabulary alignment of models before a multi-task merge, the way MergeLM does it.

Single-task models fine-tuned from one base may have grown the vocabulary (WizardMath-13B
adds a pad token: 32,001 rows against Llama-2-13b's 32,000). Before merging, every model
(and the base) gets the largest model's extra tokens: its input-embedding and output
rows are extended, each new row initialised as the mean of the model's existing rows
(MergeLM's smart_tokenizer_and_embedding_resize), and it ships the largest model's
tokenizer. Models that need nothing are hard-linked, not copied. The extra tokens must
be the same ones: a model whose tokenizer has different tokens at those ids, or already
has one of them elsewhere, is an error naming both.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .st_io import COPIED, EMBEDDING_SUFFIXES, Checkpoint, CheckpointError, MergeError, ShardedWriter
from ..utils import InputError

OUTPUT_SUFFIXES = ("lm_head.weight", "embed_out.weight")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                   "chat_template.jinja")


def _vocab_rows(ckpt: Checkpoint) -> int:
    emb = [t for n, t in ckpt.tensors.items() if n.endswith(EMBEDDING_SUFFIXES)]
    if len(emb) != 1:
        raise MergeError(f"{ckpt.path}: expected one input-embedding tensor "
                         f"(*{', *'.join(EMBEDDING_SUFFIXES)}), found {len(emb)}")
    return emb[0].shape[0]


def _tokens(path: Path, ids: range) -> list[str]:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    return tok.convert_ids_to_tokens(list(ids)) if len(tok) >= ids.stop else []


def _link_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.is_file():
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)


def _extend(src: Path, dst: Path, rows: int, tokenizer_from: Path) -> None:
    """Copy the checkpoint at src to dst with the vocabulary tensors grown to `rows`
    (new rows = the mean of the old ones, float32 then rounded), streaming tensor by tensor."""
    ckpt = Checkpoint(src)
    grow = {n for n, t in ckpt.tensors.items()
            if n.endswith(EMBEDDING_SUFFIXES + OUTPUT_SUFFIXES) and len(t.shape) == 2}
    names = sorted(ckpt.tensors)
    shapes = [(n, ckpt.tensors[n].dtype, ((rows,) + tuple(ckpt.tensors[n].shape[1:])) if n in grow
               else tuple(ckpt.tensors[n].shape)) for n in names]
    dst.mkdir(parents=True)
    writer = ShardedWriter(dst, shapes, 5 * 10**9)
    ckpt.open()
    try:
        for n in names:
            info = ckpt.tensors[n]
            data = ckpt.view(n, 0, info.numel)
            writer.write(n, data)
            if n in grow:
                old = data.view(info.shape)
                mean = old.to(torch.float32).mean(0, keepdim=True).to(old.dtype)
                writer.write(n, mean.expand(rows - info.shape[0], -1).contiguous())
        writer.close()
    finally:
        ckpt.close()
    for f in COPIED:
        if (src / f).is_file() and f not in TOKENIZER_FILES:
            shutil.copy2(src / f, dst / f)
    cfg_path = dst / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        cfg["vocab_size"] = rows
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for f in TOKENIZER_FILES:
        if (tokenizer_from / f).is_file():
            shutil.copy2(tokenizer_from / f, dst / f)


def align(models: dict[str, Path], base: Path, out_dir: Path) -> dict:
    """Write out_dir/<name>/ for each of `models` and out_dir/base/, aligned to the largest
    vocabulary; returns the record (rows per model, the added tokens, which were extended)."""
    everything = {**{k: Path(v) for k, v in models.items()}, "base": Path(base)}
    try:
        rows = {name: _vocab_rows(Checkpoint(p)) for name, p in everything.items()}
    except CheckpointError as e:
        raise MergeError(str(e)) from None
    target = max(rows.values())
    largest = [n for n, r in rows.items() if r == target]
    smallest = min(rows.values())
    added = list(range(smallest, target))
    tokens = {}
    if added:
        ids = range(smallest, target)
        ref = largest[0]
        tokens = {n: _tokens(everything[n], ids) for n in largest}
        for n in largest[1:]:
            if tokens[n] != tokens[ref]:
                raise MergeError(f"models {ref!r} and {n!r} both have {target} vocabulary rows "
                                 f"but different tokens at ids {smallest}..{target - 1}: "
                                 f"{tokens[ref]} vs {tokens[n]}")
        from transformers import AutoTokenizer
        for n, r in rows.items():
            if r < target:
                vocab = AutoTokenizer.from_pretrained(everything[n]).get_vocab()
                clash = [t for t in tokens[ref][r - smallest:] if t in vocab]
                if clash:
                    raise MergeError(f"model {n!r} ({everything[n]}) already has token "
                                     f"{clash[0]!r}, which {ref!r} adds at a new id")
    record = {"rows": rows, "target_rows": target, "added_tokens": tokens.get(largest[0], []),
              "tokenizer_from": str(everything[largest[0]]) if added else None, "extended": []}
    for name, path in everything.items():
        if rows[name] == target:
            _link_tree(path, out_dir / name)
        else:
            _extend(path, out_dir / name, target, everything[largest[0]])
            record["extended"].append(name)
    return record


def align_group(group: str, cfg: dict, out_dir: Path) -> tuple[dict, list[Path]]:
    """A multi-task group's models and base (`cfg`: the group's `models` and `base`, local
    directories or hub ids) aligned into `out_dir`, the record written as align.json; returns
    the record and the model directories read."""
    import json

    from ..models import local_model_dir
    key = f"multitask.groups.{group}"
    models = {t: local_model_dir(src, f"{key}.models.{t}") for t, src in cfg["models"].items()}
    base = local_model_dir(cfg["base"], f"{key}.base")
    try:
        record = align(models, base, out_dir)
    except MergeError as e:
        raise InputError(f"multitask_align {group}: {e}") from None
    (out_dir / "align.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record, [*models.values(), base]
