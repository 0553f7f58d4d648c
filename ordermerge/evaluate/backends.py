"""Generation backends: what turns an evaluation's prompts into greedy completions, one
object per backend behind one interface (after lm-evaluation-harness's ``LM``, whose
``generate_until`` takes one evaluation's requests). The config's ``evaluate.backend`` (or
a task's) names one of ``BACKENDS``; the evaluation (run.py), greedy soup's candidates, the
config check and the memory preflight ask it, never which one it is:

- ``open(threads)``: the job's session, shared by every model the job evaluates, a context
  manager (vLLM's worker and engine start at its first generation and stop on exit);
- ``session.generator(model_path, model, tokenizer, rows, cfg)``: one model's generator,
  ``generator(prompts, max_new_tokens=, stop=)`` -> completions, and ``generator.info()``,
  what the record says generated its outputs;
- ``loads_model``: whether the model's transformers weights are loaded to generate (vLLM
  loads them itself; the evaluation then loads only the tokenizer);
- ``params(evaluate)``: the engine settings an evaluation's params carry beside its
  task's, from the config's ``evaluate`` section (changing them reruns it);
- ``lacks(tasks)``: what this machine lacks to generate `tasks` with it (the config
  check, before any job);
- ``memory(ev)``: how the preflight estimates a generating job: (batch of sequences held
  at once, share of the GPU it may take or None, what to change).

Log-likelihood scoring and encoder heads always run on transformers. Adding a backend is
its entry here, its module, its environment (envs/) and the schema's enum. This module
imports no heavy library at import time: the config check reads it.
"""
from __future__ import annotations


class HFGenerator:
    """transformers' batched greedy generate on a loaded model (generate.py)."""

    def __init__(self, model, tokenizer, batch_size: int):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def __call__(self, prompts: list[str], *, max_new_tokens: int, stop) -> list[str]:
        from .generate import generate_greedy
        return generate_greedy(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                               batch_size=self.batch_size, stop=list(stop))

    @staticmethod
    def info() -> dict:
        from .generate import generation_info
        return generation_info("hf")


class _HFSession:
    """transformers needs nothing per job: each model generates in this process."""

    def __init__(self):
        self.last: dict = {}  # no timings to report (vLLM's session keeps its engine's)

    def close(self) -> None:
        return None

    @staticmethod
    def generator(model_path, model, tokenizer, rows, cfg) -> HFGenerator:
        return HFGenerator(model, tokenizer, cfg["batch_size"])


class HF:
    name = "hf"
    loads_model = True

    @staticmethod
    def open(threads: int | None = None) -> _HFSession:
        return _HFSession()

    @staticmethod
    def params(evaluate: dict) -> dict:
        return {}

    @staticmethod
    def lacks(tasks: list[str]) -> list[str]:
        return []

    @staticmethod
    def memory(ev: dict) -> tuple[int, float | None, str]:
        """The whole batch of prompts and new tokens on the GPU at once."""
        return ev["batch_size"], None, "lower evaluate.batch_size"


class VLLM:
    name = "vllm"
    loads_model = False

    @staticmethod
    def open(threads: int | None = None):
        from .vllm_backend import VLLMSession
        return VLLMSession(threads=threads)

    @staticmethod
    def params(evaluate: dict) -> dict:
        return {"vllm": evaluate["vllm"]}

    @staticmethod
    def lacks(tasks: list[str]) -> list[str]:
        from .vllm_env import find_worker_python
        py, why = find_worker_python()
        return [] if py else [f"config key evaluate.backend: vllm generates {', '.join(tasks)}, "
                              f"but {why}"]

    @staticmethod
    def memory(ev: dict) -> tuple[int, float | None, str]:
        """vLLM takes its share of the GPU and fills what the weights leave with KV cache:
        it needs room for one whole sequence."""
        return (1, ev["vllm"]["gpu_memory_utilization"],
                "raise evaluate.vllm.gpu_memory_utilization or shorten max_new_tokens")


BACKENDS = {b.name: b for b in (HF, VLLM)}


def get_backend(name: str):
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown generation backend {name!r} (known: "
                       f"{', '.join(BACKENDS)})") from None


class Sessions:
    """One job's backend sessions, each opened at its first use and closed together on
    exit (a job whose tasks generate with different backends holds both)."""

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self.open: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for s in self.open.values():
            s.close()
        self.open.clear()

    def __getitem__(self, name: str):
        if name not in self.open:
            self.open[name] = get_backend(name).open(self.threads)
        return self.open[name]

    def take_last(self) -> dict:
        """The last generation's timings a session kept (vLLM: its engine's load and
        generation), for the job's log; forgotten once taken."""
        out = {}
        for s in self.open.values():
            out |= s.last
            s.last = {}
        return out
