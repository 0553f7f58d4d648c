"""The vLLM side of the vllm generation backend (vllm_backend.py): run by the Python of an
environment that has vLLM, which is not ordermerge's (vLLM pins transformers, numba and
numpy below what the rest of the workflow runs with), so this file imports nothing but the
standard library and vLLM, and runs as a script.

    python vllm_worker.py --reply-fd N        # requests on stdin, one JSON per line

Each request names a checkpoint directory, the prompts as token ids, the new-token limit,
the stop strings and stop token ids, and the engine settings. The first request starts an
engine; a request for another checkpoint of the same architecture and tokenizer reloads the
weights in place (vLLM's `reload_weights`), which takes seconds where a new engine takes
tens of them; anything else starts a new engine. The reply, one JSON line on file
descriptor N (stdout and stderr stay free for vLLM's logs): every prompt's generated token
ids and finish reason, or the error in one line. A request of kind `logprobs` asks instead
for each prompt's summed prompt log-probabilities from a token on (lm-eval's
log-likelihoods, ordermerge/general_eval.py). End of input ends the worker.

Decoding is greedy (temperature 0), with the end-of-sequence token given by the caller
(`ignore_eos` and `stop_token_ids`, and no generation_config.json defaults), so that it
stops exactly where transformers' `generate(eos_token_id=...)` does. Stop strings only end a
generation early; the caller decodes the token ids and cuts at the first stop string itself.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path


def _identity(model: str) -> tuple:
    """What must match for a weight reload to stand in for a new engine: the model's config
    without its dtype and version fields, and the tokenizer's files."""
    cfg = json.loads(Path(model, "config.json").read_text())
    for k in ("transformers_version", "_name_or_path", "dtype", "torch_dtype"):
        cfg.pop(k, None)
    tok = hashlib.sha256()
    for name in ("tokenizer.json", "special_tokens_map.json", "tokenizer.model"):
        f = Path(model, name)
        if f.is_file():
            tok.update(name.encode() + f.read_bytes())
    f = Path(model, "tokenizer_config.json")
    if f.is_file():  # without the fields that say where it was loaded from
        tc = json.loads(f.read_text())
        for k in ("is_local", "local_files_only", "name_or_path", "_commit_hash"):
            tc.pop(k, None)
        tok.update(json.dumps(tc, sort_keys=True).encode())
    return json.dumps(cfg, sort_keys=True), tok.hexdigest()


def in_process() -> None:
    """On the CPU, vLLM's engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0,
    unless the caller's environment sets it). Its default, an engine-core process and an
    executor worker process beside this one, each importing vLLM, torch and transformers
    again, took 23-26 s and 27 CPU-s to start the tiny suite's model on a 2-core AMD EPYC,
    against 8-10 s and 10 CPU-s in-process, with the same token ids and no slower
    generation: on the CPU the separate processes only share the same cores. On a GPU the
    engine core keeps its own process, where it overlaps scheduling with the device's work."""
    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


class Worker:
    def __init__(self):
        self.llm = None
        self.key = None  # (identity, engine settings) of the running engine
        self.model = None

    def engine_for(self, model: str, engine: dict) -> str:
        """The engine holding `model`'s weights: 'kept', 'reloaded' or 'started'."""
        key = (_identity(model), json.dumps(engine, sort_keys=True))
        if self.llm is not None and key == self.key:
            if model == self.model:
                return "kept"
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": model})
            self.llm.reset_prefix_cache()
            self.model = model
            return "reloaded"
        if self.llm is not None:
            self.shutdown()
        in_process()
        from vllm import LLM
        self.llm = LLM(model=model, tokenizer=model, generation_config="vllm", **engine)
        self.key, self.model = key, model
        return "started"

    def shutdown(self):
        if self.llm is not None:
            import gc
            del self.llm
            self.llm = None
            gc.collect()

    def generate(self, req: dict) -> dict:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        t0 = time.perf_counter()
        how = self.engine_for(req["model"], req["engine"])
        t1 = time.perf_counter()
        max_len = self.llm.llm_engine.model_config.max_model_len
        for i, p in enumerate(req["prompts"]):
            if len(p) + req["max_new_tokens"] > max_len:
                return {"ok": False, "prompt": i,
                        "error": f"prompt {i} has {len(p)} tokens; with max_new_tokens "
                                 f"{req['max_new_tokens']} it exceeds the model's context of "
                                 f"{max_len} tokens"}
        params = SamplingParams(temperature=0.0, max_tokens=req["max_new_tokens"],
                                stop=req["stop"] or None, stop_token_ids=req["stop_token_ids"],
                                ignore_eos=True, seed=0, detokenize=bool(req["stop"]))
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in req["prompts"]],
                                 params, use_tqdm=False)
        t2 = time.perf_counter()
        import torch
        import vllm
        return {"ok": True, "outputs": [list(o.outputs[0].token_ids) for o in outs],
                "finish": [o.outputs[0].finish_reason for o in outs], "load": how,
                "load_s": t1 - t0, "generate_s": t2 - t1,
                "versions": {"vllm": vllm.__version__, "torch": torch.__version__},
                "engine_process": ("separate" if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING",
                                                                 "1") != "0" else "in-process"),
                "device": (torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")}


    def logprobs(self, req: dict) -> dict:
        """Each prompt's summed log-probability of its tokens from index `starts[i]` on, each
        given the tokens before it (vLLM's prompt log-probabilities), and whether each of those
        tokens is the greedy choice: what lm-eval's log-likelihood requests ask of a model."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        t0 = time.perf_counter()
        how = self.engine_for(req["model"], req["engine"])
        t1 = time.perf_counter()
        max_len = self.llm.llm_engine.model_config.max_model_len
        for i, p in enumerate(req["prompts"]):
            if len(p) > max_len or not 0 < req["starts"][i] < len(p):
                return {"ok": False, "prompt": i,
                        "error": f"prompt {i} has {len(p)} tokens (the model's context: "
                                 f"{max_len}) and scores from token {req['starts'][i]}"}
        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1, seed=0,
                                detokenize=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in req["prompts"]],
                                 params, use_tqdm=False)
        scores = []
        for p, start, o in zip(req["prompts"], req["starts"], outs):
            picked = [o.prompt_logprobs[j][p[j]] for j in range(start, len(p))]
            scores.append([sum(lp.logprob for lp in picked), all(lp.rank == 1 for lp in picked)])
        t2 = time.perf_counter()
        import torch
        import vllm
        return {"ok": True, "scores": scores, "load": how, "load_s": t1 - t0,
                "generate_s": t2 - t1,
                "versions": {"vllm": vllm.__version__, "torch": torch.__version__}}

    def serve(self, req: dict) -> dict:
        return self.logprobs(req) if req.get("kind") == "logprobs" else self.generate(req)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reply-fd", type=int, required=True)
    args = p.parse_args()
    reply = os.fdopen(args.reply_fd, "w")
    worker = Worker()
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            try:
                out = worker.serve(req)
            except Exception as e:  # the caller raises it, named, in its own process
                out = {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
            reply.write(json.dumps(out) + "\n")
            reply.flush()
    finally:
        worker.shutdown()


if __name__ == "__main__":
    main()
