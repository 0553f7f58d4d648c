"""LoRA runs: a frozen base with low-rank adapters trained in its place, through PEFT.

A task's ``train.adapter`` (null: full fine-tuning) names the adapter: ``{kind: lora, r,
alpha, dropout, target_modules}``. Each targeted linear layer W (out x in) gains
ΔW = B A · alpha / r, with A (r x in) and B (out x r) the only parameters trained (PEFT's
LoRA: A drawn Kaiming-uniform, B zero, so ΔW starts at 0). The K runs of one task differ
only in their data order: their adapters start from the same draw (the seed is the task's,
not the run's), as the encoder tasks' heads do.

A checkpoint of a LoRA run is its adapter in PEFT's format (``adapter_config.json``,
``adapter_model.safetensors``: A and B in float32, as trained), loadable with
``PeftModel.from_pretrained(base, checkpoint)``; the base is named there and in the
checkpoint's provenance record as an input, not copied.
"""
from __future__ import annotations

from pathlib import Path

from .utils import InputError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


# train.adapter's defaults (config/schema.yaml names them in its description: a default
# inside a nullable object would be filled into null by Snakemake's validation)
DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.0,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def settings(adapter: dict) -> dict:
    """`adapter` with DEFAULTS filled in."""
    return {**DEFAULTS, **adapter}


def is_adapter(model) -> bool:
    """Whether `model` is a PEFT model (its checkpoints are adapters)."""
    return hasattr(model, "peft_config")


def wrap(model, adapter: dict, seed: int):
    """`model` with `adapter`'s LoRA layers, A drawn from `seed` (the global generator is
    left as it was); only A and B train. InputError naming train.adapter where a target
    module is not in the model."""
    import torch
    from peft import LoraConfig, get_peft_model

    s = settings(adapter)
    cfg = LoraConfig(r=s["r"], lora_alpha=s["alpha"], lora_dropout=s["dropout"],
                     target_modules=list(s["target_modules"]), bias="none",
                     task_type="CAUSAL_LM")
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in s["target_modules"] if t not in names]
    if missing:
        raise InputError(f"train.adapter.target_modules: {missing[0]!r} is not a module of the "
                         f"model (its linear layers include: "
                         f"{', '.join(sorted(_linear_names(model))[:12])})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, cfg)


def _linear_names(model) -> set[str]:
    import torch
    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def save_adapter(model, tokenizer, out_dir: str | Path) -> None:
    """The adapter (PEFT's format) and the tokenizer, into `out_dir` (a directory this run
    made): PEFT's model card (README.md) is not kept, as no other checkpoint has one."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    card = out_dir / "README.md"
    if card.is_file():
        card.unlink()
    tokenizer.save_pretrained(out_dir)
