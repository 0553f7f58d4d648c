"""Config checks that name the offending key path, and cross-key rules a schema can't say."""
from __future__ import annotations

from pathlib import Path

from ..data.registry import TASKS
from ..evaluate import get_evaluator
from ..evaluate.backends import get_backend
from ..schema import fill_defaults, schema, schema_errors, train_errors


class ConfigError(ValueError):
    pass


def _method_errors(specs: list[dict], seeds: list[int], key: str) -> list[str]:
    """Each merge-method spec that names no registered method or a bad setting."""
    from ..merge.methods import expand
    out = []
    for i, spec in enumerate(specs):
        try:
            expand([spec], seeds, rounds=1)
        except ValueError as e:
            out.append(f"config key {key}[{i}]: {e}")
    return out


# sections a config may set to null to turn them off
NULLABLE = ("table2", "table4", "figures", "general_eval")
_BLOCK = {"decoder": ("model", "decoders"), "encoder": ("encoder", "encoders")}


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _entry_spec(config: dict, block: str, entry: dict) -> dict:
    """A models.decoders/encoders entry's block: the primary's with the entry's changes. An
    entry with a source of its own does not take the primary's `shape` (its sizes)."""
    merged = deep_merge(config[block], {k: v for k, v in entry.items() if k != "tasks"})
    if "source" in entry and "shape" not in entry:
        merged.pop("shape", None)
    return merged


def model_specs(config: dict) -> dict[str, dict]:
    """Every model of the run: name -> {family, spec (its model/encoder block: the primary
    one, or the primary's with a models.decoders/encoders entry's changes), tasks (the
    configured tasks of its family it runs), primary}. Primary models run every task of
    their family; the others their entry's `tasks` (default all)."""
    family_tasks = {f: [t for t in config["tasks"] if t in TASKS and TASKS[t].family == f]
                    for f in _BLOCK}
    out = {}
    for fam, (block, key) in _BLOCK.items():
        out[config[block]["name"]] = {"family": fam, "spec": config[block],
                                      "tasks": family_tasks[fam], "primary": True}
        for e in (config.get("models") or {}).get(key, []):
            spec = _entry_spec(config, block, e)
            tasks = family_tasks[fam] if e.get("tasks") is None else list(e["tasks"])
            out.setdefault(e["name"], {"family": fam, "spec": spec, "tasks": tasks, "primary": False})
    lo = lora_spec(config)
    if lo is not None:  # the primary decoder, fine-tuned with adapters
        out.setdefault(lo["name"], {"family": "decoder", "spec": config["model"],
                                    "tasks": lo["tasks"], "primary": False, "lora": lo,
                                    "base_of": config["model"]["name"]})
    return out


def lora_spec(config: dict) -> dict | None:
    """The `lora` section with its defaults: adapter (lora.py DEFAULTS, kind lora), train
    changes, methods; None when there is none."""
    lo = config.get("lora")
    if lo is None:
        return None
    from ..lora import settings
    return {"name": lo["name"], "tasks": list(lo["tasks"]),
            "adapter": {"kind": "lora", **settings(lo.get("adapter") or {})},
            "train": dict(lo.get("train") or {}),
            # unless it names its merges, those merge.methods defaults to (the paper's three)
            "methods": lo.get("methods") or schema()["properties"]["merge"]["properties"]["methods"]["default"]}


def lora_train(config: dict, task: str) -> dict:
    """A LoRA run's train section: the task's, with the lora section's changes and adapter."""
    lo = lora_spec(config)
    return {**config["tasks"][task]["train"], **lo["train"], "adapter": lo["adapter"]}


def _lora_errors(config: dict) -> list[str]:
    lo = lora_spec(config)
    if lo is None:
        return []
    out = []
    if lo["name"] in model_specs({**config, "lora": None}):  # every other model's name
        out.append(f"config key lora.name: {lo['name']!r} is taken (names are the {{model}} path "
                   "wildcard)")
    for t in lo["tasks"]:
        if t not in config["tasks"]:
            out.append(f"config key lora.tasks: {t!r} is not configured under tasks")
        elif t in TASKS and TASKS[t].family != "decoder":
            out.append(f"config key lora.tasks: {t!r} is an {TASKS[t].family} task (LoRA runs "
                       "adapt the decoder)")
        elif t in TASKS:
            tr = lora_train(config, t)
            out += [e.replace("config key ", "config key lora.train.", 1).replace(
                        "lora.train.adapter", "lora.adapter", 1)
                    for e in schema_errors(tr, schema()["$defs"]["train"])]
            out += train_errors(tr, "lora.train")
    out += _method_errors(lo["methods"], config["merge"]["seeds"], "lora.methods")
    return out


def _model_errors(config: dict, schema: dict) -> list[str]:
    """Each models.decoders/encoders entry: a valid model block once merged, a name of its
    own, tasks of its family that are configured."""
    out, seen = [], {config["model"]["name"], config["encoder"]["name"]}
    for fam, (block, key) in _BLOCK.items():
        for i, e in enumerate((config.get("models") or {}).get(key, [])):
            where = f"models.{key}[{i}]"
            merged = _entry_spec(config, block, e)
            out += [err.replace("config key ", f"config key {where}.", 1).replace(f"{where}.:", f"{where}:")
                    for err in schema_errors(merged, schema["properties"][block])]
            if e["name"] in seen:
                out.append(f"config key {where}.name: {e['name']!r} is taken (names are the "
                           "{model} path wildcard)")
            seen.add(e["name"])
            for t in e.get("tasks") or []:
                if t not in config["tasks"]:
                    out.append(f"config key {where}.tasks: {t!r} is not configured under tasks")
                elif t in TASKS and TASKS[t].family != fam:
                    out.append(f"config key {where}.tasks: {t!r} is a {TASKS[t].family} task")
    return out


def _analysis_errors(config: dict) -> list[str]:
    """Figures and Table 4 name configured tasks and runs."""
    out = []
    fig = config.get("figures")
    if fig is not None:
        decoders = [t for t in config["tasks"] if t in TASKS and TASKS[t].family == "decoder"]
        if fig["task"] is not None and fig["task"] not in config["tasks"]:
            out.append(f"config key figures.task: {fig['task']!r} is not configured under tasks")
        elif fig["task"] is None and not decoders and config["tasks"]:
            out.append("config key figures.task: no decoder task to draw; name one or set figures: null")
        if fig["anchor"] >= config["num_sub_models"]:
            out.append(f"config key figures.anchor: run {fig['anchor']} >= num_sub_models "
                       f"({config['num_sub_models']})")
        if config["num_sub_models"] < 2 and config["tasks"]:
            out.append("config key figures: the figures compare sub-models; num_sub_models must be"
                       " >= 2 (or set figures: null)")
        out += _method_errors(fig["methods"], config["merge"]["seeds"], "figures.methods")
        reseed = fig["controls"]["reseed"]
        if reseed is not None and reseed == config["seed"]:
            out.append(f"config key figures.controls.reseed: {reseed} is the global seed: that "
                       "run would be the repeat control (controls.repeat); name another seed")
    t2 = config.get("table2")
    if t2 is not None and t2["tasks"] is not None:
        for t in t2["tasks"]:
            if t not in config["tasks"]:
                out.append(f"config key table2.tasks: {t!r} is not configured under tasks")
    if t2 is not None:
        out += _method_errors(t2["methods"], config["merge"]["seeds"], "table2.methods")
    t4 = config.get("table4")
    if t4 is not None:
        for t in t4["tasks"]:
            if t not in config["tasks"]:
                out.append(f"config key table4.tasks: {t!r} is not configured under tasks")
        out += _method_errors(t4["methods"], config["merge"]["seeds"], "table4.methods")
    return out


def _lm_eval_task_names_text() -> str | None:
    """The text of every task YAML lm-eval ships (None: lm-eval is not installed here)."""
    import importlib.util
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "tasks"
    return "\n".join(f.read_text(errors="replace") for f in sorted(root.rglob("*.yaml")))


def _general_errors(config: dict) -> list[str]:
    """What the workflow's config check refuses of the general_eval section, before any job:
    finetuned tasks that are not Table 1 decoder tasks, include paths that are not
    directories or hold unreadable YAML, metrics of unconfigured tasks, and task names that
    neither a local YAML nor any task file of lm-eval's names (a cheap text search, 0.4 s,
    made only for names that are not local; lm-eval's own index takes 14 s)."""
    import re

    from ..general_eval import local_tasks
    g = config.get("general_eval")
    if g is None:
        return []
    out = []
    decoders = [t for t in config["tasks"] if t in TASKS and TASKS[t].family == "decoder"]
    for t in g["finetuned"] or []:
        if t not in decoders:
            out.append(f"config key general_eval.finetuned: {t!r} is not a decoder task of Table 1 "
                       f"configured under tasks")
    if not (g["finetuned"] if g["finetuned"] is not None else decoders):
        out.append("config key general_eval: no Table 1 decoder task to evaluate the models of "
                   "(set general_eval: null)")
    try:
        local = local_tasks(g["include_path"])
    except ValueError as e:
        return out + [f"config key {e}" if str(e).startswith("general_eval") else str(e)]
    if g.get("methods") is not None:
        out += _method_errors(g["methods"], config["merge"]["seeds"], "general_eval.methods")
    for t in g["metrics"]:
        if t not in g["tasks"]:
            out.append(f"config key general_eval.metrics.{t}: not one of general_eval.tasks")
    remote = [t for t in g["tasks"] if t not in local]
    if remote:
        text = _lm_eval_task_names_text()
        if text is None:
            out.append(f"config key general_eval.tasks: {', '.join(remote)} are not local tasks "
                       f"(include_path) and lm-eval is not installed here (pip install "
                       f"lm-eval==0.4.13)")
        else:
            for t in remote:
                if not re.search(rf"(?<![A-Za-z0-9_.-]){re.escape(t)}(?![A-Za-z0-9_.-])", text):
                    out.append(f"config key general_eval.tasks: {t!r}: no task of that name in "
                               f"lm-eval's task files or under general_eval.include_path")
    return out


def eval_section(config: dict, task: str) -> dict:
    """A task's evaluate section (defaults filled in) with its generation backend resolved
    (the task's, else evaluate.backend) and the backend's engine settings: what its
    evaluations' params carry, so that changing either reruns them."""
    ev = config["tasks"][task]["evaluate"]
    g = config["evaluate"]
    backend = ev.get("backend") or g["backend"]
    return ev | {"backend": backend} | get_backend(backend).params(g)


def eval_settings(config: dict, task: str, kind: str, epoch, scheme: str, model: str) -> dict:
    """An evaluation's settings, as its params and records carry them: the task's evaluate
    section (eval_section), the length its prompts are cut to (the task's train.max_length;
    the schema's default where the config has no train section for it), and what labels
    its records."""
    t = config["tasks"][task]
    max_length = (t["train"]["max_length"] if "train" in t
                  else schema()["$defs"]["train"]["properties"]["max_length"]["default"])
    return eval_section(config, task) | {"kind": kind, "epoch": int(epoch), "scheme": scheme,
                                         "model": model, "max_length": max_length}


def generating_backend(config: dict, task: str) -> str | None:
    """The backend that generates `task`'s evaluation outputs; None where its evaluator
    generates nothing (log-likelihood scoring and encoder heads run on transformers)."""
    from ..evaluate.handlers import generates
    ev = eval_section(config, task)
    return ev["backend"] if generates(get_evaluator(TASKS[task].evaluator),
                                      ev["choice_scoring"]) else None


def _backend_errors(config: dict) -> list[str]:
    """Tables compare their rows and columns: outputs generated by different backends in one
    table (every configured decoder task is a column of Table 1) are refused unless
    evaluate.mixed_backends says so."""
    by = {}
    for name in config["tasks"]:
        if name in TASKS and (backend := generating_backend(config, name)) is not None:
            by.setdefault(backend, []).append(name)
    if len(by) > 1 and not config["evaluate"]["mixed_backends"]:
        said = "; ".join(f"{b}: {', '.join(ts)}" for b, ts in sorted(by.items()))
        return [f"config key tasks.<task>.evaluate.backend: the tables would mix outputs "
                f"generated by different backends ({said}); use one (evaluate.backend), or set "
                f"evaluate.mixed_backends: true"]
    return []


# set by `ordermerge plan`'s dry run: a plan for another machine checks the config, not
# this machine (environment_errors)
PLAN_ONLY = "ORDERMERGE_PLAN_ONLY"


def environment_errors(config: dict) -> list[str]:
    """What this machine lacks to run the config, checked by the workflow before any job runs
    (a job that would fail on it has its earlier outputs removed first): what each generation
    backend lacks here for the tasks it generates (backends.py: the vLLM worker's Python),
    and the local data copies the config
    names (tasks.<name>.data.path and test_path of an hf source): readable, and read as the
    prepare_data job will read them (local_data_error)."""
    import os
    out = []
    by: dict[str, list[str]] = {}  # backend -> the tasks it generates
    for n in sorted(config["tasks"]):
        if n in TASKS and (backend := generating_backend(config, n)) is not None:
            by.setdefault(backend, []).append(n)
    for backend, tasks in by.items():
        out += get_backend(backend).lacks(tasks)
    g = config.get("general_eval")
    if g is not None and g["backend"] != "hf" and g["backend"] not in by:
        out += [e.replace("config key evaluate.backend:", "config key general_eval.backend:")
                for e in get_backend(g["backend"]).lacks(["the general benchmarks"])]
    from ..progress import tracker_errors
    out += tracker_errors(config["sft"]["trackers"])
    for name, task in config["tasks"].items():
        data = task.get("data") or {}
        if data.get("source") != "hf":
            continue
        for key in ("path", "test_path"):
            where = data.get(key)
            if where is None:
                continue
            if not Path(where).exists():
                out.append(f"config key tasks.{name}.data.{key}: {where}: no such file or directory")
            elif not os.access(where, os.R_OK):
                out.append(f"config key tasks.{name}.data.{key}: {where}: not readable")
        if data.get("path") and not out:
            why = local_data_error(name, data, config["seed"])
            if why:
                out.append(f"config key tasks.{name}.data: {why}")
    return out


DATA_CHECKS = Path(".snakemake") / "ordermerge" / "data-checks.json"


def local_data_error(task: str, data: dict, seed: int, cache: Path = DATA_CHECKS) -> str | None:
    """Why the local copy a task's data section names cannot be prepared (a line that is not
    JSON, a row the task cannot use), found by preparing it as the prepare_data job will; None
    when it can. A job that would fail on it has its earlier outputs removed first, so this
    runs before any job. Each (task, data section, seed, files' size and mtime) that prepared
    cleanly is remembered in `cache`, so a large local dataset is read once per version."""
    import hashlib
    import json

    from ..data.prepare import prepare
    from ..data.sources import DatasetUnavailable
    from ..utils import atomic_file
    files = []
    for key in ("path", "test_path"):
        if data.get(key):
            root = Path(data[key])
            for f in sorted([root] if root.is_file() else (p for p in root.rglob("*") if p.is_file())):
                st = f.stat()
                files.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    key = hashlib.sha256(json.dumps([task, data, seed, files], sort_keys=True).encode()).hexdigest()
    try:
        known = set(json.loads(cache.read_text()))
    except (OSError, ValueError, TypeError):
        known = set()
    if key in known:
        return None
    try:
        prepare(task, data, seed, f"tasks.{task}.data")
    except (DatasetUnavailable, ValueError, OSError) as e:
        return str(e)
    try:  # a cache that cannot be written costs a re-read next time, nothing else
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(cache, "w") as fh:
            json.dump(sorted(known | {key}), fh)
    except OSError:
        pass
    return None


def semantic_errors(config: dict) -> list[str]:
    """Rules across keys, checked after defaults are filled in."""
    out = []
    for name, task in config["tasks"].items():
        if name not in TASKS:
            out.append(f"config key tasks.{name}: unknown task; registered: {', '.join(sorted(TASKS))}")
            continue
        t = TASKS[name]
        if get_evaluator(t.evaluator).kind == "code" and not task["evaluate"]["allow_code_execution"]:
            out.append(f"config key tasks.{name}.evaluate.allow_code_execution: task {name!r} is "
                       f"scored by running the model's completions as Python ({t.evaluator}); "
                       f"set it to true to allow that (the sandbox is not a container)")
        out += train_errors(task.get("train", {}), f"tasks.{name}.train")
        if (task.get("train") or {}).get("adapter") is not None and t.family != "decoder":
            out.append(f"config key tasks.{name}.train.adapter: LoRA runs adapt a decoder; "
                       f"{name} trains an encoder's head")
    out += _backend_errors(config)
    for e in config["merge"]["epochs"] or []:
        if e > config["epochs"]:
            out.append(f"config key merge.epochs: epoch {e} > epochs ({config['epochs']})")
    rep = config["report"]["epoch"]
    if rep is not None:
        if rep > config["epochs"]:
            out.append(f"config key report.epoch: {rep} > epochs ({config['epochs']})")
        elif config["merge"]["epochs"] is not None and rep not in config["merge"]["epochs"]:
            out.append(f"config key report.epoch: {rep} is not among merge.epochs")
    out += _method_errors(config["merge"]["methods"], config["merge"]["seeds"], "merge.methods")
    out += _lora_errors(config)
    out += _analysis_errors(config)
    out += _general_errors(config)
    if config["merge"]["ensemble"] and not config["evaluate"]["mixed_backends"]:
        out += [f"config key merge.ensemble: task {t} generates with evaluate.backend vllm; the "
                "ensemble of the runs is evaluated with transformers (hf), and a table refuses "
                "mixed backends: set merge.ensemble: false (or evaluate.mixed_backends: true)"
                for t in config["tasks"]
                if t in TASKS and config["tasks"][t] is not None
                and generating_backend(config, t) == "vllm"]
    for gname, group in config.get("multitask", {}).get("groups", {}).items():
        if group is None:  # removed by a layered config file
            continue
        key = f"multitask.groups.{gname}"
        families = set()
        for t in group["tasks"]:
            if t not in config["tasks"]:
                out.append(f"config key {key}.tasks: task {t!r} is not configured under tasks "
                           f"(its data and evaluation settings come from there)")
            elif t in TASKS:
                families.add(TASKS[t].family)
        if families - {"decoder"}:
            out.append(f"config key {key}.tasks: multi-task groups merge decoder models; "
                       f"encoder tasks cannot join")
        lora = [t for t in group["tasks"] if t in config["tasks"]
                and config["tasks"][t]["train"].get("adapter") is not None]
        if lora and not all(t in group["models"] for t in lora):
            out.append(f"config key {key}.tasks: {lora[0]!r} trains LoRA runs (train.adapter), "
                       "and multi-task merging aligns full models: give it a model under "
                       f"{key}.models, or take it out of the group")
        for t in group["models"]:
            if t not in group["tasks"]:
                out.append(f"config key {key}.models.{t}: not a task of the group")
        if group["run"] >= config["num_sub_models"]:
            out.append(f"config key {key}.run: {group['run']} >= num_sub_models "
                       f"({config['num_sub_models']})")
        if group["weights"] is not None and len(group["weights"]) != len(group["tasks"]):
            out.append(f"config key {key}.weights: {len(group['weights'])} values for "
                       f"{len(group['tasks'])} tasks")
        out += _method_errors(group["methods"], group["seeds"] or config["merge"]["seeds"],
                              f"{key}.methods")
    k = config["num_sub_models"]
    w = config["merge"]["weights"]
    if w is not None:
        if len(w) != k:
            out.append(f"config key merge.weights: {len(w)} values for num_sub_models = {k}")
        elif abs(sum(w) - 1.0) > 1e-6:
            out.append(f"config key merge.weights: must sum to 1, sum is {sum(w)}")
    sft = config["sft"]
    if sft["accelerate_config"] is not None and not Path(sft["accelerate_config"]).is_file():
        out.append(f"config key sft.accelerate_config: no file {sft['accelerate_config']!r} "
                   f"(relative to the working directory; shipped: config/accelerate/)")
    elif sft["accelerate_config"] is not None:
        from ..sharding import ShardingError, from_accelerate_config
        import yaml
        try:
            sharded = from_accelerate_config(
                yaml.safe_load(Path(sft["accelerate_config"]).read_text()) or {}) is not None
        except ShardingError as e:
            out.append(f"config key sft.accelerate_config: {sft['accelerate_config']}: {e}")
            sharded = False
        lora = [t for t, v in config["tasks"].items() if v["train"].get("adapter") is not None]
        lora += [f"lora ({', '.join(config['lora']['tasks'])})"] if config.get("lora") else []
        if sharded and lora:  # sft.py refuses it too, but only once the run has started
            out.append(f"config key sft.accelerate_config: {sft['accelerate_config']} shards the "
                       f"model (FSDP2), and LoRA runs ({', '.join(lora)}) are not sharded: train "
                       "them in one process or with DDP (config/accelerate/ddp-4gpu.yaml)")
    if sft["num_processes"] > 1 and sft["accelerate_config"] is None:
        out.append(f"config key sft.num_processes: {sft['num_processes']} processes need "
                   f"sft.accelerate_config (e.g. config/accelerate/ddp-4gpu.yaml)")
    if k < 2:
        out.append(f"config key num_sub_models: {k}; selection and resample need at least 2 sub-models")
    if config["encoder"]["name"] == config["model"]["name"]:
        out.append("config key encoder.name: the encoder needs a name of its own (it is the "
                   "{model} path wildcard of encoder tasks)")
    if config["model"]["source"] != "tiny" and config["model"]["name"] == "tiny-llama":
        out.append("config key model.name: set a name for the pretrained source "
                   f"{config['model']['source']!r} (it is the {{model}} path wildcard)")
    return out


def check(config: dict, schema: dict, fill_defaults) -> None:
    """Raise ConfigError listing every problem; `fill_defaults(config)` sets schema defaults.
    A task or a multi-task group set to null (by a config file layered on config.yaml) is
    removed."""
    for section in (config.get("tasks"), (config.get("multitask") or {}).get("groups")):
        if isinstance(section, dict):
            for name in [n for n, g in section.items() if g is None]:
                del section[name]
    errors = schema_errors(config, schema)
    if not errors:
        # a section set to null (no Table 2 / Table 4 / figures) keeps its null: the default
        # filler would otherwise try to fill it
        off = [k for k in NULLABLE if k in config and config[k] is None]
        for k in off:
            del config[k]
        fill_defaults(config)
        for k in off:
            config[k] = None
        errors = _model_errors(config, schema) + semantic_errors(config)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def load(*files: str | Path, project: str | Path | None = None) -> dict:
    """The checked config of the project's config.yaml with `files` layered on it (as
    ``snakemake --configfile`` layers them: nested keys are merged), defaults filled in: what
    the workflow plans from, without Snakemake. ConfigError names what is wrong."""
    import yaml
    root = Path(project) if project else Path(__file__).resolve().parents[2]
    config: dict = {}
    from ..utils import yaml_error
    for f in (root / "config.yaml", *map(Path, files)):
        try:
            layer = yaml.safe_load(Path(f).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(yaml_error(f, e)) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{f}: not a UTF-8 text file") from None
        if not isinstance(layer, dict):
            raise ConfigError(f"{f}: not a mapping of config keys")
        config = deep_merge(config, layer)
    full = schema()
    check(config, full, lambda c: fill_defaults(c, full))
    return config

