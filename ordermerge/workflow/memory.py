"""Peak accelerator memory of an SFT step and of greedy generation, from a Llama-shaped
model's config: the parts a preflight names (weights, gradients, optimizer states,
activations; for generation the KV cache), in bytes.

SFT keeps, per parameter, its master weight and AdamW's two moments, all in the master
dtype (fp32: 12 bytes; bf16 weights: 6 bytes), and during backward and the step its
gradient (4 or 2 bytes), divided over the processes when the model is fully sharded
(FSDP). Gradients are allocated as backward frees the saved activations, so the peak holds
the larger of the two, plus the logits' working set. Activations are what autograd saves
under bf16 autocast, per token:

- a decoder layer without gradient checkpointing: each RMSNorm's fp32 input and fp32
  normalised output and its bf16 result (2 x 10h bytes); q, the rotated q and the attention
  output (6h), k, v and the rotated k (6h x kv_heads / heads), and k and v repeated to every
  head for attention where there are fewer key-value heads (4h x (1 - kv_heads / heads));
  the MLP's gate, up, SiLU and product (4 x 2i). With checkpointing only each layer's fp32
  input stays (4h), plus one layer's activations while it is recomputed;
- the logits: bf16 and their fp32 copy for the loss (6 bytes per vocabulary entry).

Checked against measurements of a 7B and a 1.1B Llama on one H200 (tests/test_memory.py:
within 15% of each, `MEASURED`). Allocator slack and the CUDA context are not modelled.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Shape:
    """The sizes of a Llama-shaped decoder (Hugging Face config.json's names)."""
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False

    @classmethod
    def from_config(cls, cfg: dict) -> "Shape":
        """From a config.json (or the config's `tiny` block); a missing size is named."""
        need = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "vocab_size")
        missing = [k for k in need if k not in cfg]
        if missing:
            raise ValueError(f"model config lacks {', '.join(missing)} (a Llama-shaped "
                             f"config.json has them)")
        return cls(*(int(cfg[k]) for k in need[:4]),
                   int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
                   int(cfg["vocab_size"]), bool(cfg.get("tie_word_embeddings", False)))

    @property
    def kv_ratio(self) -> float:
        return self.num_key_value_heads / self.num_attention_heads

    def parameters(self) -> int:
        h = self.hidden_size
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * self.layer_parameters() + embeddings + h

    def layer_parameters(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        return 2 * h * h + 2 * int(h * h * self.kv_ratio) + 3 * h * i + 2 * h

    def layer_activation_bytes(self) -> float:
        """Bytes autograd saves per token in one decoder layer (bf16 autocast)."""
        h, i = self.hidden_size, self.intermediate_size
        return 20 * h + 6 * h + 6 * h * self.kv_ratio + 4 * h * (1 - self.kv_ratio) + 8 * i


def lora_parameters(shape: Shape, adapter: dict) -> int:
    """The trainable parameters of LoRA adapters of rank r on `target_modules`: r x (in +
    out) per targeted linear layer of every decoder layer."""
    h, i, kv = shape.hidden_size, shape.intermediate_size, int(shape.hidden_size * shape.kv_ratio)
    sides = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
             "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    unknown = [t for t in adapter["target_modules"] if t not in sides]
    if unknown:
        raise ValueError(f"target module {unknown[0]!r}: not a linear layer of a Llama-shaped "
                         f"decoder ({', '.join(sides)})")
    return shape.num_hidden_layers * sum(adapter["r"] * sum(sides[t]) for t in adapter["target_modules"])


def sft_peak(shape: Shape, *, micro_batch: int, seq_len: int, master: str = "float32",
             processes: int = 1, sharded: bool = False, gradient_checkpointing: bool = False,
             adapter: dict | None = None) -> dict[str, float]:
    """Peak bytes of one SFT process during a step of `micro_batch` rows of `seq_len`
    tokens: weights, gradients, optimizer (AdamW), activations, logits and the total
    (weights + optimizer + the larger of gradients and activations + logits). `sharded`:
    weights, gradients and optimizer states are split over the `processes` (FSDP full
    shard; a sharded process also holds two decoder layers gathered whole, the one it
    computes and the one prefetched); otherwise every process holds them whole (one
    process, or DDP)."""
    if master not in DTYPE_BYTES:
        raise ValueError(f"master dtype {master!r}: one of {', '.join(DTYPE_BYTES)}")
    n = shape.parameters()
    share = processes if sharded else 1
    b = DTYPE_BYTES[master]
    tokens = micro_batch * seq_len
    layer = shape.layer_activation_bytes()
    if gradient_checkpointing:
        act = tokens * (shape.num_hidden_layers * 4 * shape.hidden_size + layer)
    else:
        act = tokens * shape.num_hidden_layers * layer
    if adapter is None:
        parts = {"weights": n * b / share, "gradients": n * b / share,
                 "optimizer": 2 * n * b / share}
    else:
        a = lora_parameters(shape, adapter)
        parts = {"weights": n * b + a * 4.0, "gradients": a * 4.0, "optimizer": 2 * a * 4.0}
    parts |= {"activations": float(act), "logits": float(tokens * shape.vocab_size * 6)}
    if sharded and processes > 1:
        parts["gathered"] = float(2 * shape.layer_parameters() * b)
    total = (parts["weights"] + parts["optimizer"] + max(parts["gradients"], parts["activations"])
             + parts["logits"] + parts.get("gathered", 0.0))
    return {**parts, "total": total}


def generation_peak(shape: Shape, *, batch: int, prompt_len: int, new_tokens: int,
                    dtype: str = "bfloat16") -> dict[str, float]:
    """Peak bytes of greedy generation: the weights, the KV cache of `batch` sequences of
    prompt + new tokens, and the prompt pass's logits (fp32)."""
    b = DTYPE_BYTES[dtype]
    length = prompt_len + new_tokens
    kv = 2 * shape.num_hidden_layers * batch * length * shape.hidden_size * shape.kv_ratio * b
    parts = {"weights": shape.parameters() * b, "kv_cache": kv,
             "logits": batch * prompt_len * shape.vocab_size * 4.0}
    return {**parts, "total": sum(parts.values())}


def describe(parts: dict[str, float]) -> str:
    """'101.6 GiB (weights 25.1, gradients 25.1, optimizer 50.2, activations 4.4, logits
    1.1)'."""
    rest = ", ".join(f"{k} {v / GIB:.1f}" for k, v in parts.items() if k != "total")
    return f"{parts['total'] / GIB:.1f} GiB ({rest})"
