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


def add_arguments(p) -> None:
    """The arguments of `ordermerge train` and of the workflow's sft script."""
    p.add_argument("--task", required=True, help="task name (ordermerge.data.registry)")
    p.add_argument("--base", required=True,
                   help="base model: a local directory (e.g. the tiny built base) or a Hugging Face id")
    p.add_argument("--data-dir", required=True, type=Path,
                   help="directory with the task's train.jsonl and validation.jsonl")
    p.add_argument("--order", required=True, type=Path,
                   help='order file: {"epochs": [[row ids], ...], "seed": s, "run": r}')
    p.add_argument("--out-dir", required=True, type=Path)



def train_parser(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a base model on one task in a given data order",
                       description="One SFT run (ordermerge.sft): follows the order exactly, "
                                   "checkpoints each epoch, resumes after a kill. Run it under "
                                   "`accelerate launch` for several processes.")
    add_arguments(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--params", type=json.loads, default=None,
                   help='train settings as JSON, e.g. \'{"lr": 2e-5, "batch_size": 64}\'')
    g.add_argument("--params-file", type=Path, help="train settings as a YAML or JSON file")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def run_train(args) -> int:
    import torch
    import yaml

    from .sft import TrainError, run_from_args

    params = args.params or {}
    if args.params_file is not None:
        params = yaml.safe_load(args.params_file.read_text()) or {}
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    try:
        run_from_args(args, params, "ordermerge train", lambda m: print(m, file=sys.stderr, flush=True))
    except (TrainError, FileNotFoundError, RuntimeError) as e:
        print(f"ordermerge train: {e}", file=sys.stderr)
        return 1
    return 0


def merge_parser(sub) -> None:
    p = sub.add_parser("merge", help="merge K checkpoints (Hugging Face layout) into one model",
                       description="Merge K sub-models: weighted average, parameter selection, or "
                                   "selection with resampling (Ju et al. 2024).")
    p.add_argument("--method", required=True, choices=["average", "select", "resample"])
    p.add_argument("--base", help="base model directory (needed by resample)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--weights", type=float, nargs="+", help="average weights, one per input")
    g.add_argument("--probs", type=float, nargs="+", help="selection probabilities, one per input")
    p.add_argument("--rounds", type=int, default=1, help="resample rounds n (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="output dtype of float tensors (default: the inputs')")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--memory-budget", type=parse_size, default="1GiB",
                   help="peak working memory for chunks (default 1GiB)")
    p.add_argument("--max-shard-size", type=parse_size, default="5GB")
    p.add_argument("--threads", type=int, help="CPU threads (torch and the numba kernels; results do not depend on it)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("-o", "--out", required=True, help="output model directory")
    p.add_argument("inputs", nargs="+", help="the K sub-model directories")


def run_merge(args) -> int:
    import torch

    from .merge.engine import MergeError, merge

    if args.threads:
        from .merge import fused
        torch.set_num_threads(args.threads)
        fused.set_threads(args.threads)
    if args.method == "average" and args.probs:
        print("ordermerge merge: --probs is for select/resample; average takes --weights",
              file=sys.stderr)
        return 2
    if args.method != "average" and args.weights:
        print("ordermerge merge: --weights is for average; select/resample take --probs",
              file=sys.stderr)
        return 2
    try:
        recipe = merge(args.method, args.inputs, args.out, overwrite=args.overwrite,
                       base=args.base, weights=args.weights or args.probs, seed=args.seed,
                       rounds=args.rounds, dtype=args.dtype, device=args.device,
                       memory_budget=args.memory_budget, max_shard_bytes=args.max_shard_size)
    except MergeError as e:
        print(f"ordermerge merge: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: recipe[k] for k in ("method", "stats", "wall_s", "shards")}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ordermerge")
    sub = parser.add_subparsers(dest="command", required=True)
    merge_parser(sub)
    train_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "merge":
        return run_merge(args)
    if args.command == "train":
        return run_train(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
