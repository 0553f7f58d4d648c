"""The plan's memory preflight: every SFT and evaluation job of a decoder whose estimated
peak memory (memory.py) exceeds its stage's GPU memory, before any job runs. It reads the
models' config.json and the accelerate config from disk, so it is called explicitly
(``Plan.check``), not when a plan is made."""
from __future__ import annotations

import json
from pathlib import Path

from ..evaluate.backends import get_backend
from .config import eval_section, generating_backend
from .memory import GIB, Shape, describe, generation_peak, sft_peak


class Preflight:
    def model_shape(self, name: str):
        """The sizes of decoder `name` (memory.Shape): the tiny block's, the block's `shape`,
        or a local source's config.json; None when none of these is there."""
        spec = self.models[name]["spec"]
        if spec["source"] == "tiny":
            t = spec["tiny"]
            return Shape(t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"],
                         t["num_attention_heads"], t["num_attention_heads"],
                         spec["tokenizer"]["vocab_size"], t["tie_word_embeddings"])
        if spec.get("shape"):
            return Shape.from_config(spec["shape"])
        cfg = Path(spec["source"]) / "config.json"
        return Shape.from_config(json.loads(cfg.read_text())) if cfg.is_file() else None

    def sharding(self) -> tuple[bool, int]:
        """(fully sharded, processes) of an SFT run, from sft.accelerate_config."""
        s = self.config["sft"]
        if s["accelerate_config"] is None:
            return False, 1
        import yaml

        from ..sharding import from_accelerate_config
        acc = yaml.safe_load(Path(s["accelerate_config"]).read_text()) or {}
        return from_accelerate_config(acc) is not None, s["num_processes"]

    def preflight(self) -> list[str]:
        """Every SFT and evaluation job of a decoder whose estimated peak memory
        (ordermerge/workflow/memory.py) exceeds its stage's resources.<stage>.gpu_mem_gb, named with
        the estimate's parts. Encoder jobs (BERT sizes) are not estimated."""
        limits = {s: self.res(s, "gpu_mem_gb") for s in ("sft", "evaluate")}
        if all(v is None for v in limits.values()):
            return []
        sharded, processes = self.sharding()
        out = []
        for m in self.decoders:
            shape = self.model_shape(m)
            if shape is None:
                out.append(f"model {m}: no sizes to estimate its memory from (set its `shape`: "
                           f"config.json's hidden_size, intermediate_size, num_hidden_layers, "
                           f"num_attention_heads, num_key_value_heads, vocab_size)")
                continue
            for t in self.models[m]["tasks"]:
                tr, ev = self.train_of(m, t), eval_section(self.config, t)
                tokens = tr["micro_batch_tokens"] or tr["micro_batch_size"] * tr["max_length"]
                # the batch of sequences the generating backend holds at once, its share of
                # the GPU, what to change (backends.py); scoring runs on transformers
                batch, share, fix = get_backend(generating_backend(self.config, t) or "hf").memory(ev)
                # stage: (estimate, share of the GPU it may take, what to change)
                jobs = {"sft": (sft_peak(shape, micro_batch=1, seq_len=tokens, processes=processes,
                                         sharded=sharded,
                                         gradient_checkpointing=tr["gradient_checkpointing"],
                                         adapter=tr.get("adapter")),
                                None, "shard it (an FSDP sft.accelerate_config and "
                                "sft.num_processes), or lower train.micro_batch_size / "
                                "micro_batch_tokens"),
                        "evaluate": (generation_peak(shape, batch=batch, prompt_len=tr["max_length"],
                                                     new_tokens=ev.get("max_new_tokens") or 0,
                                                     dtype=self.models[m]["spec"]["dtype"]),
                                     share, fix)}
                if self.config["merge"]["ensemble"] and t in self.tasks:
                    # the K runs' ensemble: K models' weights at once beside one's activations
                    e = dict(jobs["evaluate"][0])
                    e["weights"] *= self.config["num_sub_models"]
                    e["total"] = sum(v for k, v in e.items() if k != "total")
                    jobs["ensemble"] = (e, None, "set merge.ensemble: false (the ensemble of the "
                                        f"{self.config['num_sub_models']} runs holds them all)")
                for stage, (est, share, fix) in jobs.items():
                    limit = limits["evaluate" if stage == "ensemble" else stage]
                    if limit is None or est["total"] <= limit * (share or 1.0) * GIB:
                        continue
                    said = f"resources.{'evaluate' if stage == 'ensemble' else stage}.gpu_mem_gb = {limit}"
                    if share is not None:
                        said = f"evaluate.vllm.gpu_memory_utilization {share} of {said}"
                    what = "the ensemble (merge.ensemble)" if stage == "ensemble" else stage
                    out.append(f"{what} of {m} on {t} needs about {describe(est)}, over "
                               f"{said}: {fix}")
        return out + self._general_preflight(limits["evaluate"])

    def _general_preflight(self, limit) -> list[str]:
        """Table 5's jobs: lm-eval's HFLM holds general_eval.batch_size sequences of a
        benchmark's longest context (prompt, few-shot examples and answer; the estimates of
        general_eval.benchmark_size, or max_length) on the evaluate stage's GPU."""
        from ..general_eval import benchmark_size
        g = self.general
        if g is None or limit is None:
            return []
        out = []
        for name in g["tasks"]:
            b = benchmark_size(name, g["include_path"], g["num_fewshot"])
            context = int(b["context"])
            new = 0 if b["options"] else b["max_gen"]
            if g["max_length"] is not None:
                context = min(context, g["max_length"])
            for m in self.general_models():
                shape = self.model_shape(m)
                if shape is None:
                    continue  # named by the loop above
                est = generation_peak(shape, batch=g["batch_size"], prompt_len=context + b["answer"],
                                      new_tokens=new, dtype=self.models[m]["spec"]["dtype"])
                if est["total"] > limit * GIB:
                    out.append(f"general_eval of {m} on {name} needs about {describe(est)}, over "
                               f"resources.evaluate.gpu_mem_gb = {limit}: lower "
                               f"general_eval.batch_size")
        return out
