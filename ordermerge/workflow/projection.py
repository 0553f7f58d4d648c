"""The grid's cost and disk before anything is submitted: `ordermerge plan`.

The jobs are Snakemake's own: a dry run (`snakemake -n --forceall`) of the config lists every
job with its rule, wildcards, inputs, outputs and benchmark path. Each job's work follows
from the plan, the task's sizes and the model's:

- SFT: epochs x the training rows' tokens (6 x parameters FLOPs a token), the validation
  passes (2 x parameters a token), the base loaded and each checkpoint written;
- merges: the input models' bytes through the merge, the outputs written;
- evaluations: per model evaluated, its load, then per test row the prompt's prefill and,
  for generating tasks, greedy decoding (steps of a batch until its longest answer or
  max_new_tokens), for choice tasks every option scored, for encoders one forward;
- scoring and Figure 4's curves: forward passes over the split at each point;
- the tiny suite's base models: their pretraining steps; everything else: its fixed cost.

Rates come from a calibration file (config/calibration/h200.yaml by default; `python
bench/calibrate.py` writes one for the machine it runs on): a job's wall time = its fixed
cost (overhead_s, per rule) + its work at those rates; GPU-hours = wall x the stage's
resources.<stage>.gpus (the job's GPUs, sbatch --gpus; an SFT job's work divides over its
sft.num_processes, each on one of them, communication not modelled). Token counts come from the
prepared data with the model's tokenizer where both are on disk (results/data/<task>,
results/base/<model>/model or a local source), else from the task entry's `stats`
(data/stats.py). Disk: every model written (parameters x the config's dtype bytes), with
`sft.temporary_checkpoints` the sub-models' checkpoints removed once their merges and
evaluations are done; peak (temporary) = what is kept + the largest one task's
checkpoints (tasks draining one after another; at most the total).

The table has the cost table's rows (report/cost.py: per rule, per paper table, total), so
`--measured results/tables/cost.csv` sets the projection beside a finished run.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from . import dryrun
from .dryrun import DryJob
from .stages import BENCHMARK_STAGES, rule_of, stage_of
from ..utils import InputError

ROOT = Path(__file__).resolve().parents[2]
CALIBRATION = ROOT / "config" / "calibration" / "h200.yaml"
RATES = ("train_flops_per_s", "forward_flops_per_s", "decode_step_s", "decode_layer_s",
         "io_bytes_per_s", "merge_bytes_per_s", "load_s")
# parameters of encoders from the hub whose config.json is not on disk (their model cards)
KNOWN_PARAMS = {"google-bert/bert-base-uncased": 109_482_240, "bert-base-uncased": 109_482_240,
                "google-bert/bert-large-uncased": 335_141_888, "bert-large-uncased": 335_141_888}
COLUMNS = ["wall_h", "gpu_h", "trained_tokens", "scored_tokens", "generated_tokens",
           "written_gb", "temporary_gb"]


class ProjectionError(InputError):
    pass


def load_calibration(path: str | Path = CALIBRATION) -> dict:
    """The calibration file, checked: each rate a positive number (the decode terms may be
    0), overhead_s a mapping with a default."""
    import yaml
    path = Path(path)
    try:
        cal = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ProjectionError(f"calibration {path}: {e}") from None
    if not isinstance(cal, dict):
        raise ProjectionError(f"calibration {path}: not a mapping")
    for key in RATES:
        v = cal.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (
                v == 0 and key not in ("decode_step_s", "decode_layer_s", "load_s")):
            raise ProjectionError(f"calibration {path}: {key} must be a positive number, got {v!r}")
    if cal.get("decode_steps", "answers") not in ("answers", "limit"):
        raise ProjectionError(f"calibration {path}: decode_steps must be answers or limit, got "
                              f"{cal.get('decode_steps')!r}")
    over = cal.get("overhead_s")
    if not isinstance(over, dict) or not isinstance(over.get("default"), (int, float)):
        raise ProjectionError(f"calibration {path}: overhead_s must map rules or stages to "
                              f"seconds, with a default")
    return cal


# ------------------------------------------------------------------ the jobs
def dry_run(workdir: Path, configfiles: list[str], targets: list[str] = ()) -> list[DryJob]:
    """Every job of the workflow in `workdir` under `configfiles` (as if none existed)."""
    try:
        return dryrun.dry_run(workdir, configfiles, targets)
    except dryrun.DryRunError as e:
        raise ProjectionError(f"snakemake dry run in {workdir} failed: " + " | ".join(e.tail[-5:])) from None


# ------------------------------------------------------------------ sizes
def _tokenizer_dir(plan, model: str) -> Path | None:
    base = plan.models[model].get("base_of", model)  # LoRA runs: their base's tokenizer
    for d in (Path("results/base") / base / "model", Path(plan.models[model]["spec"]["source"])):
        if (d / "tokenizer_config.json").is_file():
            return d
    return None


class Sizes:
    """Per (model, task): rows and tokens (from the data where it is on disk with the
    model's tokenizer, else the task entry's stats); per model: parameters, layers, bytes."""

    def __init__(self, plan):
        self.plan = plan
        self.cache: dict = {}
        self.sources: dict[str, str] = {}

    def model(self, name: str) -> dict:
        if ("model", name) in self.cache:
            return self.cache["model", name]
        from .memory import DTYPE_BYTES
        m = self.plan.models[name]
        spec = m["spec"]
        if m["family"] == "decoder":
            shape = self.plan.model_shape(name)
            if shape is None:
                raise ProjectionError(f"model {name}: no sizes (set its `shape`, or a local "
                                      f"source with a config.json)")
            params, layers = shape.parameters(), shape.num_hidden_layers
            h, i = shape.hidden_size, shape.intermediate_size
            # RegMean's Grams, in x in per linear weight: q, k, v, o, gate, up (in h), down
            # (in i), and the LM head
            grams = layers * (6 * h * h + i * i) + h * h
        else:
            params, layers, grams = self._encoder_params(name, spec)
        out = {"params": params, "layers": layers, "gram_elements": grams,
               "bytes": params * DTYPE_BYTES[spec.get("dtype", "bfloat16")]}
        self.cache["model", name] = out
        return out

    def _encoder_params(self, name: str, spec: dict) -> tuple[int, int, int]:
        """Parameters, layers and RegMean's Gram elements (q, k, v, o and the FFN's first
        weight take h inputs, its second i; the pooler and head h) of an encoder."""
        if spec["source"] == "tiny":
            cfg = {**spec["tiny"], "vocab_size": (spec.get("tokenizer") or {}).get("vocab_size", 384)}
        else:
            f = Path(spec["source"]) / "config.json"
            if not f.is_file():
                if spec["source"] in KNOWN_PARAMS:
                    h, i, n = (1024, 4096, 24) if "large" in spec["source"] else (768, 3072, 12)
                    return KNOWN_PARAMS[spec["source"]], n, n * (5 * h * h + i * i) + 2 * h * h
                raise ProjectionError(f"encoder {name}: no config.json at {spec['source']} to "
                                      f"size it from (give a local source)")
            cfg = json.loads(f.read_text())
        h, i, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
        # a BERT layer: attention 4h^2 + FFN 2hi (+ biases and norms, 9h); embeddings: the
        # vocabulary, 512 positions and 2 token types
        return (n * (4 * h * h + 2 * h * i + 9 * h) + (cfg.get("vocab_size", 384) + 514) * h, n,
                n * (5 * h * h + i * i) + 2 * h * h)

    def task(self, model: str, task: str) -> dict:
        key = ("task", model, task)
        if key not in self.cache:
            self.cache[key] = self._from_data(model, task) or self._from_stats(task)
        return self.cache[key]

    def _from_data(self, model: str, task: str) -> dict | None:
        from ..data.registry import get_task
        from ..utils import read_jsonl
        data = Path("results/data") / task
        tok_dir = _tokenizer_dir(self.plan, model)
        if tok_dir is None or not all((data / f"{s}.jsonl").is_file()
                                      for s in ("train", "validation", "test")):
            return None
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(tok_dir)
        t = get_task(task)
        cap = self.plan.config["tasks"][task]["train"]["max_length"]

        def n(text: str) -> int:
            return len(tok(text, add_special_tokens=False)["input_ids"])

        from ..objectives import objective_for
        obj = objective_for(t, tok, cap)  # the rows as SFT encodes them

        def row_tokens(r) -> int:
            return len(obj.encode(r)["input_ids"])
        rows = {s: read_jsonl(data / f"{s}.jsonl") for s in ("train", "validation", "test")}
        test = rows["test"]
        prompts = [min(n(t.encoder_text(r) if t.family == "encoder" else t.prompt(r)) + 1, cap)
                   for r in test]
        answers = [n(" " + str(t.target(r))) if "answer" in r or "output" in r or "response" in r
                   else 1 for r in test] if t.family == "decoder" else [0]
        opts = [len(t.options(r)) for r in test] if t.options else [0]
        self.sources[task] = f"data ({data}, tokenizer {tok_dir})"
        return {"rows": {s: len(v) for s, v in rows.items()},
                "tokens": {s: sum(map(row_tokens, v)) for s, v in rows.items() if s != "test"}
                | {"test_prompt": sum(prompts)},
                "answer_mean": sum(answers) / max(len(answers), 1),
                "answer_p95": sorted(answers)[int(0.95 * (len(answers) - 1))],
                "options": max(opts)}

    def _from_stats(self, task: str) -> dict:
        from ..data.stats import STATS  # beside the entries: no job depends on it
        s = STATS.get(task)
        if s is None:
            raise ProjectionError(f"task {task}: no data on disk and no stats in "
                                  f"ordermerge/data/stats.py to project its cost from")
        cfg = self.plan.config["tasks"][task]
        d = cfg.get("data") or {}
        cap = cfg["train"]["max_length"]
        n_val = d.get("n_validation") or 0
        # prepare.py holds the validation rows out of the source's train split first, then
        # keeps the first n_train of the rest (was: n_train - n_validation)
        n_train = min(d.get("n_train") or s["train_rows"], s["train_rows"] - n_val)
        n_test = min(d.get("n_test") or s["test_rows"], s["test_rows"])
        per_row = min(s["train_tokens"], cap)
        self.sources[task] = f"task entry stats ({s['source']})"
        return {"rows": {"train": n_train, "validation": n_val, "test": n_test},
                "tokens": {"train": n_train * per_row, "validation": n_val * per_row,
                           "test_prompt": n_test * min(s["prompt_tokens"], cap)},
                "answer_mean": s["answer_tokens"], "answer_p95": 2 * s["answer_tokens"],
                "options": s.get("options", 0)}


# ------------------------------------------------------------------ the work
MODEL_DIR = re.compile(r"^results/(sft/[^/]+/[^/]+/[^/]+/run\d+/(epoch\d+|steps/step\d+)|"
                       r"merged/[^/]+/[^/]+/[^/]+/epoch\d+/[^/]+|multitask/[^/]+/[^/]+|"
                       r"base/[^/]+/model)$")


def _models_in(paths: list[str]) -> list[str]:
    return [p for p in paths if MODEL_DIR.match(p)]


class Projector:
    def __init__(self, plan, calibration: dict):
        self.plan, self.cal = plan, calibration
        self.sizes = Sizes(plan)
        self.config = plan.config

    def overhead(self, rule: str) -> float:
        o = self.cal["overhead_s"]
        return float(o.get(rule, o.get(stage_of(rule) or "default", o["default"])))

    def _model_of(self, job: DryJob) -> str:
        return job.wildcards.get("model") or self.plan.model_of(self._tasks(job)[0])

    def _tasks(self, job: DryJob) -> list[str]:
        if "task" in job.wildcards:
            return [job.wildcards["task"]]
        return job.values("--task")

    # seconds of work at the calibrated rates, and what it moved
    def forward_s(self, model: str, tokens: float) -> float:
        return 2 * self.sizes.model(model)["params"] * tokens / self.cal["forward_flops_per_s"]

    def io_s(self, model: str, n_models: float, nbytes: float | None = None) -> float:
        """Loading or saving n_models checkpoints: a fixed cost each, and their bytes (the
        model's, or `nbytes` each: a LoRA run's adapters)."""
        nbytes = self.sizes.model(model)["bytes"] if nbytes is None else nbytes
        return n_models * (self.cal["load_s"] + nbytes / self.cal["io_bytes_per_s"])

    def evaluate_one(self, model: str, task: str, params: dict,
                     split: str = "test") -> tuple[float, dict]:
        """One model's evaluation on the test split; on the validation split (greedy soup's
        evaluations), the test's costs scaled by the rows."""
        if split == "validation":
            s = self.sizes.task(model, task)
            f = s["rows"]["validation"] / max(s["rows"]["test"], 1)
            secs, out = self.evaluate_one(model, task, params)
            return self.io_s(model, 1) + f * (secs - self.io_s(model, 1)), {
                k: f * v for k, v in out.items()}
        from ..data.registry import get_task
        from ..evaluate import get_evaluator
        from ..evaluate.handlers import generates
        t = get_task(task)
        s = self.sizes.task(model, task)
        n = s["rows"]["test"]
        secs = self.io_s(model, 1) + self.forward_s(model, s["tokens"]["test_prompt"])
        out = {"scored_tokens": s["tokens"]["test_prompt"], "generated_tokens": 0.0}
        ev = get_evaluator(t.evaluator)
        if generates(ev, params.get("choice_scoring") or "loglik"):
            new = params.get("max_new_tokens") or 512
            batch = params.get("batch_size") or 32
            # a batch decodes until its longest answer ends (fine-tuned models stop at
            # their end-of-sequence token), or with decode_steps: limit to max_new_tokens
            answers = self.cal.get("decode_steps", "answers") == "answers"
            steps = min(new, max(1, math.ceil(s["answer_p95"]))) if answers else new
            m = self.sizes.model(model)
            step_s = (self.cal["decode_step_s"] + m["layers"] * self.cal["decode_layer_s"]
                      + 2 * m["params"] * batch / self.cal["forward_flops_per_s"])
            secs += math.ceil(n / batch) * steps * step_s
            out["generated_tokens"] = n * min(new, s["answer_mean"])
        elif ev.kind == "choice":
            extra = n * s["options"] * max(s["answer_mean"], 1)
            secs += self.forward_s(model, (s["options"] - 1) * s["tokens"]["test_prompt"] + extra)
            out["scored_tokens"] = s["options"] * s["tokens"]["test_prompt"] + extra
        return secs, out

    def work(self, job: DryJob) -> dict:
        """{work_s, trained_tokens, scored_tokens, generated_tokens, written_bytes,
        temporary_bytes} of one job (work_s without its fixed cost), by the cost model its
        rule declares (stages.py: cost_<name> here)."""
        decl = rule_of(job.rule)
        model = getattr(self, f"cost_{decl.cost}", None) if decl else None
        if model is None:  # a rule without a cost model would cost nothing, silently
            raise ProjectionError(f"rule {job.rule!r} has no cost model (declare it in "
                                  f"ordermerge/workflow/stages.py, with its cost_ method here)")
        out = dict.fromkeys(["work_s", "trained_tokens", "scored_tokens", "generated_tokens",
                             "written_bytes", "temporary_bytes"], 0.0)
        model(job, out)
        return out

    # ---------------------------------------------------------- the cost models (stages.py)
    def cost_free(self, job: DryJob, out: dict) -> None:
        """Data, orders, tokenizers, a head's initialisation, tables and figures: their
        fixed cost only (calibration overhead_s)."""

    def cost_base(self, job: DryJob, out: dict) -> None:
        """A base model: a tiny one's pre-training (6 x parameters FLOPs a token), then one
        checkpoint saved."""
        name = job.wildcards["model"]
        spec = self.plan.models[name]["spec"]
        if spec["source"] == "tiny":
            pre = spec.get("pretrain") or {}
            tokens = pre.get("steps", 0) * pre.get("batch_size", 0) * pre.get("max_length", 64)
            out["trained_tokens"] = tokens
            out["work_s"] = 6 * self.sizes.model(name)["params"] * tokens / self.cal["train_flops_per_s"]
        out["work_s"] += self.io_s(name, 1)
        out["written_bytes"] = self.sizes.model(name)["bytes"]

    def cost_sft(self, job: DryJob, out: dict) -> None:
        """One SFT run: every epoch's tokens trained, the validation passes, the checkpoints
        saved (what temporary_checkpoints removes), over the processes."""
        cfg, model = self.config, self._model_of(job)
        tr = self.plan.train_of(model, job.wildcards["task"])
        s = self.sizes.task(model, job.wildcards["task"])
        m = self.sizes.model(model)
        epochs = cfg["epochs"]
        checkpoints = epochs + len(tr.get("save_steps") or [])
        passes = epochs + len(tr.get("eval_steps") or [])
        trained = epochs * s["tokens"]["train"]
        procs = cfg["sft"]["num_processes"]
        # a token's training FLOPs: forward 2N, backward 2N to the activations and 2N to the
        # weights; a LoRA run's frozen base takes no weight gradient (its adapters' r-sized
        # products are not counted), and its checkpoints are the adapters (float32)
        flops, saved = 6 * m["params"], m["bytes"]
        if tr.get("adapter") is not None:
            from .memory import lora_parameters
            flops, saved = 4 * m["params"], 4 * lora_parameters(self.plan.model_shape(model), tr["adapter"])
        out["trained_tokens"] = trained
        out["scored_tokens"] = passes * s["tokens"]["validation"]
        out["work_s"] = ((flops * trained / self.cal["train_flops_per_s"]
                          + self.forward_s(model, out["scored_tokens"])) / procs
                         + self.io_s(model, 1) + self.io_s(model, checkpoints, saved))
        out["written_bytes"] = checkpoints * saved
        out["temporary_bytes"] = out["written_bytes"]  # what temporary_checkpoints removes

    def cost_merge(self, job: DryJob, out: dict) -> None:
        """Each output one merge of the inputs (the seeds of merge_seeds one by one)."""
        model = self._model_of(job)
        m = self.sizes.model(model)
        n_out, n_in = len(_models_in(job.outputs)), len(_models_in(job.inputs))
        out["work_s"] = n_out * (n_in * m["bytes"] / self.cal["merge_bytes_per_s"]
                                 + self.io_s(model, 1))
        out["written_bytes"] = n_out * m["bytes"]

    def cost_merge_soup(self, job: DryJob, out: dict) -> None:
        """Greedy soup: the merge, and K - 1 candidate soups, each evaluated on the
        validation split. A candidate is one pass (greedy_soup.RunningSoup) that reads the
        run tried and the soup's float32 sum and writes the candidate and the new sum:
        whatever was kept, two reads and two writes (inside the job's temporary directory,
        removed as it goes: not in the written bytes)."""
        self.cost_merge(job, out)
        model = self._model_of(job)
        m = self.sizes.model(model)
        k = len(_models_in(job.inputs))
        secs, counts = self.evaluate_one(model, job.wildcards["task"],
                                         job.params().get("evaluate") or {}, "validation")
        sum_bytes = 4 * m["params"]
        candidate = ((m["bytes"] + sum_bytes) / self.cal["merge_bytes_per_s"]
                     + self.io_s(model, 1) + self.io_s(model, 1, sum_bytes))
        out["work_s"] += (k - 1) * (secs + candidate)
        for key, v in counts.items():
            out[key] += (k - 1) * v

    def cost_validate_runs(self, job: DryJob, out: dict) -> None:
        """Each run evaluated on the validation split."""
        model, n = self._model_of(job), len(_models_in(job.inputs))
        secs, counts = self.evaluate_one(model, job.wildcards["task"], job.params(), "validation")
        out["work_s"] = n * secs
        for key, v in counts.items():
            out[key] += n * v

    def cost_diagonal_fisher(self, job: DryJob, out: dict) -> None:
        """A forward and a backward pass per row; the Fisher saved in fp32 (temp(), with the
        checkpoints)."""
        model = self._model_of(job)
        s = self.sizes.task(model, job.wildcards["task"])
        rows = int(job.wildcards["rows"])
        tokens = rows * s["tokens"]["train"] / max(s["rows"]["train"], 1)
        out["scored_tokens"] = tokens
        out["work_s"] = (6 * self.sizes.model(model)["params"] * tokens
                         / self.cal["train_flops_per_s"] + self.io_s(model, 1))
        out["written_bytes"] = self.sizes.model(model)["params"] * 4
        out["temporary_bytes"] = out["written_bytes"]  # temp() with the checkpoints

    def cost_input_gram(self, job: DryJob, out: dict) -> None:
        """A forward pass per row, and per token an outer product per linear weight (2 in^2
        FLOPs each); the Grams saved in fp32 (temp(), with the checkpoints)."""
        model = self._model_of(job)
        m = self.sizes.model(model)
        s = self.sizes.task(model, job.wildcards["task"])
        tokens = int(job.wildcards["rows"]) * s["tokens"]["train"] / max(s["rows"]["train"], 1)
        out["scored_tokens"] = tokens
        out["work_s"] = ((2 * m["params"] + 2 * m["gram_elements"]) * tokens
                         / self.cal["train_flops_per_s"] + self.io_s(model, 1))
        out["written_bytes"] = 4 * m["gram_elements"]
        out["temporary_bytes"] = out["written_bytes"]  # temp() with the checkpoints

    def _group(self, job: DryJob) -> tuple[str, dict, int]:
        """A group's model (the primary decoder's shape), its sizes, and its members + base."""
        model = self.plan.model
        return model, self.sizes.model(model), len(self.plan.group_models(job.wildcards["group"])) + 1

    def cost_multitask_align(self, job: DryJob, out: dict) -> None:
        """Each member and the base loaded and saved aligned."""
        model, m, n = self._group(job)
        out["work_s"] = self.io_s(model, 2 * n)
        out["written_bytes"] = n * m["bytes"]

    def cost_multitask_merge(self, job: DryJob, out: dict) -> None:
        model, m, n = self._group(job)
        out["work_s"] = n * m["bytes"] / self.cal["merge_bytes_per_s"] + self.io_s(model, 1)
        out["written_bytes"] = m["bytes"]

    def cost_evaluate(self, job: DryJob, out: dict) -> None:
        """Each model on the test split of each of its tasks (a group's evaluation on all)."""
        model, params = self._model_of(job), job.params()
        tasks = self._tasks(job)
        # each task's models: its --candidate (not a LoRA run's base, also an input; a
        # group's evaluation: one candidate per task); an --ensemble: its K models' forward
        # passes at every step (the same work as K evaluations)
        n_models = max(len(job.values("--candidate")) // len(tasks), 1)
        if job.values("--ensemble"):
            n_models = len(_models_in(job.inputs))
        for task in tasks:
            p = (params.get("tasks") or {}).get(task, params)
            secs, counts = self.evaluate_one(model, task, p)
            out["work_s"] += n_models * secs
            for k, v in counts.items():
                out[k] += n_models * v

    def cost_general_eval(self, job: DryJob, out: dict) -> None:
        """Each model on every general benchmark (general_eval.benchmark_size; the config's
        limit and num_fewshot): its load, then per item every option scored after the prompt
        and its few-shot examples, or the prompt prefilled and the answer decoded in batches
        of batch_size."""
        from ..general_eval import benchmark_size
        g, model = job.params(), self._model_of(job)
        n_models = len(job.values("--candidate"))  # not a LoRA job's base, also an input
        m, work = self.sizes.model(model), self.io_s(model, 1)
        scored = generated = 0.0
        for name in g["tasks"]:
            b = benchmark_size(name, g["include_path"], g["num_fewshot"])
            self.sizes.sources[f"general_eval {name}"] = b["source"]
            items, prompt = min(b["items"], g["limit"] or b["items"]), b["context"]
            if b["options"]:
                tokens = items * b["options"] * (prompt + b["answer"])
                scored += tokens
                work += self.forward_s(model, tokens)
            else:
                scored += items * prompt
                steps = min(b["max_gen"], 2 * b["answer"])
                step_s = (self.cal["decode_step_s"] + m["layers"] * self.cal["decode_layer_s"]
                          + 2 * m["params"] * g["batch_size"] / self.cal["forward_flops_per_s"])
                work += (self.forward_s(model, items * prompt)
                         + math.ceil(items / g["batch_size"]) * steps * step_s)
                generated += items * b["answer"]
        out["work_s"] = n_models * work
        out["scored_tokens"], out["generated_tokens"] = n_models * scored, n_models * generated

    def cost_score(self, job: DryJob, out: dict) -> None:
        """A forward pass over one split."""
        model = self._model_of(job)
        s = self.sizes.task(model, job.wildcards["task"])
        tokens = s["tokens"].get(job.wildcards["split"], s["tokens"].get("train"))
        out["scored_tokens"] = tokens
        out["work_s"] = self.io_s(model, 1) + self.forward_s(model, tokens)

    def cost_curve(self, job: DryJob, out: dict) -> None:
        """The validation loss at every checkpoint: of each run, or of the merge made at
        each checkpoint."""
        cfg, model, task = self.config, self._model_of(job), job.wildcards["task"]
        tr = cfg["tasks"][task]["train"]
        points = cfg["epochs"] + len(tr.get("save_steps") or [])
        runs = sum(1 for p in job.inputs if re.match(r"^results/sft/.*/run\d+$", p))
        s = self.sizes.task(model, task)
        m = self.sizes.model(model)
        scored = 1 if job.wildcards.get("method") else runs
        out["scored_tokens"] = points * scored * s["tokens"]["validation"]
        out["work_s"] = (self.forward_s(model, out["scored_tokens"])
                         + points * self.io_s(model, runs + (1 if scored == 1 else 0)))
        if job.wildcards.get("method"):
            out["work_s"] += points * runs * m["bytes"] / self.cal["merge_bytes_per_s"]

    def jobs(self, jobs: list[DryJob]):
        """One row per benchmarked job, with the cost table's rule, purpose and path."""
        import pandas as pd

        from ..report.cost import purpose
        rows = []
        for job in jobs:
            if job.benchmark is None:
                continue
            rel = Path(job.benchmark).relative_to("results/benchmarks")
            w = self.work(job)
            bench_rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
            stage = BENCHMARK_STAGES.get(bench_rule, "default")
            gpus = self.plan.res(stage, "gpus") or 0  # the job's GPUs (sbatch --gpus)
            wall = self.overhead(job.rule) + w.pop("work_s")
            tasks = self._tasks(job)
            rows.append({"rule": bench_rule, "job_rule": job.rule, "purpose": purpose(bench_rule, rel),
                         "stage": stage, "path": str(rel), "task": tasks[0] if tasks else None,
                         "wall_s": wall, "gpu_h": wall * gpus / 3600, **w})
        # by path: Snakemake's dry run lists jobs in no fixed order, and the same config
        # must give the same bytes (the sums too)
        return pd.DataFrame(rows).sort_values("path", ignore_index=True)


def table(jobs):
    """Rows per rule, per paper table, per stage, and the total (report/cost.py's rows)."""
    from ..report.cost import grouped_sums
    jobs = jobs.assign(wall_h=jobs["wall_s"] / 3600, written_gb=jobs["written_bytes"] / 1e9,
                       temporary_gb=jobs["temporary_bytes"] / 1e9)
    return grouped_sums(jobs, ("rule", "purpose", "stage"), COLUMNS)


def disk(jobs) -> dict:
    """GB written in all; and kept at the end and at the peak, without and with
    sft.temporary_checkpoints (the peak with them: what is kept + the largest one task's
    checkpoints, the tasks draining one after another; at most everything written)."""
    written = jobs["written_bytes"].sum() / 1e9
    temp = jobs["temporary_bytes"].sum() / 1e9
    largest = float((jobs.groupby("task")["temporary_bytes"].sum() / 1e9).max()) if temp else 0.0
    return {"written_gb": written,
            "kept_gb": written, "peak_gb": written,
            "kept_gb_temporary": written - temp,
            "peak_gb_temporary": min(written, written - temp + largest)}


def to_markdown(t, measured=None) -> str:
    head = ["", "jobs", "wall h", "GPU h", "trained tokens", "scored tokens",
            "generated tokens", "written GB"]
    if measured is not None:
        head += ["measured wall h", "projected / measured"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, r in t.iterrows():
        cells = [row, f"{int(r['jobs'])}", f"{r['wall_h']:.4g}", f"{r['gpu_h']:.4g}",
                 f"{r['trained_tokens']:.3g}", f"{r['scored_tokens']:.3g}",
                 f"{r['generated_tokens']:.3g}", f"{r['written_gb']:.4g}"]
        if measured is not None:
            m = measured.get(row)
            cells += ["", ""] if m is None else [f"{m:.4g}", f"{r['wall_h'] / m:.2f}" if m else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def measured_wall(cost_csv: str | Path) -> dict[str, float]:
    """Row name -> wall hours of a finished run's cost table (results/tables/cost.csv)."""
    import pandas as pd
    try:
        t = pd.read_csv(cost_csv, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProjectionError(f"{cost_csv}: not a cost table ({reason})") from None
    if "wall_h" not in t.columns:
        raise ProjectionError(f"{cost_csv}: not a cost table (no wall_h column)")
    return t["wall_h"].to_dict()
