"""The memory estimate (ordermerge/workflow/memory.py) against measured peaks on one H200 (issue 26:
torch, random weights, sequences of 800 tokens, fused AdamW, bf16 autocast)."""
import pytest

from ordermerge.workflow.memory import GIB, Shape, describe, generation_peak, sft_peak

LLAMA_7B = Shape(4096, 11008, 32, 32, 32, 32000)
TINYLLAMA = Shape(2048, 5632, 22, 32, 4, 32000)
# (shape, master dtype, gradient checkpointing, micro-batch, measured peak GiB)
MEASURED = [(LLAMA_7B, "float32", True, 8, 101.4), (LLAMA_7B, "float32", True, 16, 103.1),
            (LLAMA_7B, "bfloat16", True, 8, 51.2), (LLAMA_7B, "bfloat16", True, 16, 52.7),
            (TINYLLAMA, "float32", False, 16, 47.4)]


def test_parameter_counts_are_the_models():
    assert LLAMA_7B.parameters() == 6_738_415_616
    assert TINYLLAMA.parameters() == 1_100_048_384
    cfg = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
           "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000}
    assert Shape.from_config(cfg) == TINYLLAMA
    tied = Shape.from_config({**cfg, "tie_word_embeddings": True})
    assert TINYLLAMA.parameters() - tied.parameters() == 32000 * 2048
    with pytest.raises(ValueError, match="lacks intermediate_size, vocab_size"):
        Shape.from_config({k: v for k, v in cfg.items() if k not in ("intermediate_size", "vocab_size")})


@pytest.mark.parametrize("shape,master,ckpt,micro,gib", MEASURED)
def test_the_sft_estimate_is_within_15_percent_of_each_measurement(shape, master, ckpt, micro, gib):
    est = sft_peak(shape, micro_batch=micro, seq_len=800, master=master, gradient_checkpointing=ckpt)
    assert est["total"] / GIB == pytest.approx(gib, rel=0.15), describe(est)


def test_sharding_and_checkpointing_move_the_parts_they_should():
    one = sft_peak(LLAMA_7B, micro_batch=16, seq_len=800, gradient_checkpointing=True)
    eight = sft_peak(LLAMA_7B, micro_batch=16, seq_len=800, gradient_checkpointing=True,
                     processes=8, sharded=True)
    ddp = sft_peak(LLAMA_7B, micro_batch=16, seq_len=800, gradient_checkpointing=True, processes=8)
    assert eight["optimizer"] == one["optimizer"] / 8 and ddp["total"] == one["total"]
    assert eight["activations"] == one["activations"] and eight["gathered"] > 0
    # the 7B with fp32 master weights and AdamW: over 80 GB on one GPU, under it over 8
    assert one["total"] > 80e9 > eight["total"]
    plain = sft_peak(LLAMA_7B, micro_batch=16, seq_len=800)
    assert plain["activations"] > 5 * one["activations"]  # checkpointing keeps a layer input
    with pytest.raises(ValueError, match="master dtype 'int8'"):
        sft_peak(LLAMA_7B, micro_batch=1, seq_len=8, master="int8")


def test_generation_holds_the_weights_and_the_kv_cache():
    est = generation_peak(TINYLLAMA, batch=64, prompt_len=128, new_tokens=128)
    assert est["weights"] == TINYLLAMA.parameters() * 2
    # keys and values: 22 layers x 64 sequences x 256 tokens x 4 heads x 64 dims x 2 bytes
    assert est["kv_cache"] == 2 * 22 * 64 * 256 * 256 * 2
    assert est["total"] == pytest.approx(sum(v for k, v in est.items() if k != "total"))


def test_a_lora_run_holds_the_frozen_base_and_the_adapters_states():
    """LoRA (memory.lora_parameters): r x (in + out) per targeted layer, the count PEFT's
    own wrapping gives on a small Llama with grouped key-value heads; the 7B LoRA run keeps
    the float32 base without gradients or AdamW moments: within one 80 GB GPU where the full
    run is not."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from ordermerge.workflow.memory import lora_parameters
    cfg = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=64)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    adapter = {"r": 4, "target_modules": targets}
    torch.manual_seed(0)
    m = get_peft_model(LlamaForCausalLM(LlamaConfig(**cfg)), LoraConfig(r=4, target_modules=targets))
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert lora_parameters(Shape.from_config(cfg), adapter) == trainable
    qv = {"r": 8, "target_modules": ["q_proj", "v_proj"]}
    assert lora_parameters(LLAMA_7B, qv) == 32 * 2 * 8 * (4096 + 4096)  # 4,194,304
    qkvo = {"r": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    lora = sft_peak(LLAMA_7B, micro_batch=1, seq_len=2048, gradient_checkpointing=True, adapter=qkvo)
    full = sft_peak(LLAMA_7B, micro_batch=1, seq_len=2048, gradient_checkpointing=True)
    a = lora_parameters(LLAMA_7B, qkvo)
    assert (lora["gradients"], lora["optimizer"]) == (4.0 * a, 8.0 * a)
    assert lora["weights"] == LLAMA_7B.parameters() * 4 + 4.0 * a
    assert lora["activations"] == full["activations"]
    assert lora["total"] < 80 * GIB < full["total"]
    with pytest.raises(ValueError, match="target module 'query'"):
        lora_parameters(LLAMA_7B, {"r": 8, "target_modules": ["query"]})
