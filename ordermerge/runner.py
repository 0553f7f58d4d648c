"""What every entry point in scripts/ shares: arguments, threads, logging, timing."""
from __future__ import annotations

import argparse
import json
import sys

from .provenance import now


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=json.loads, default={},
                   help="the rule's params as a JSON object")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rule", default="manual", help="rule name for the provenance record")
    return p


def start(args: argparse.Namespace) -> str:
    """Fix the thread count (results depend on it bit-for-bit) and return the start time."""
    import torch
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    return now()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
