"""Streaming safetensors I/O: header parsing, ranged reads, and a sharded writer.

The format (safetensors' spec): 8 bytes little-endian header length N, N bytes
of JSON mapping tensor names to {dtype, shape, data_offsets: [begin, end]}
(offsets relative to the byte after the header) plus an optional
``__metadata__``, then the data. Inputs are memory-mapped and read as
zero-copy views of element ranges: their pages are page cache, not this
process's anonymous memory, which stays bounded by the chunk buffers.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import shutil
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# a checkpoint directory's files that a merge (or an alignment) copies from its first input
COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json",
          "merges.txt")
# the input-embedding tensor's name in the model families we read
EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


class MergeError(ValueError):
    pass


DTYPES = {
    "BF16": (torch.bfloat16, 2), "F16": (torch.float16, 2), "F32": (torch.float32, 4),
    "F64": (torch.float64, 8), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
TORCH_TO_ST = {v[0]: k for k, v in DTYPES.items()}
SINGLE = "model.safetensors"
DEFAULT_SHARD = 5 * 10**9  # bytes per output shard at most (save_pretrained's default)
INDEX = "model.safetensors.index.json"
MAX_HEADER = 100 * 1024 * 1024
# views of the read-only mappings are never written to
warnings.filterwarnings("ignore", message="The given buffer is not writable",
                        module=__name__)


class CheckpointError(ValueError):
    """A checkpoint file or directory that cannot be read as safetensors."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    offset: int  # absolute byte offset of the data in `file`
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype][1]

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype][0]

    @property
    def is_float(self) -> bool:
        return self.torch_dtype.is_floating_point


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict]:
    """Tensor infos and metadata of one safetensors file; validates offsets against its size."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file (header of "
                                  f"{n} bytes, file of {size} bytes)")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    infos = {}
    for name, h in header.items():
        try:
            dtype, shape, (begin, end) = h["dtype"], tuple(h["shape"]), h["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        info = TensorInfo(name, dtype, shape, path, 8 + n + begin, end - begin)
        if info.nbytes != info.numel * info.itemsize or begin < 0:
            raise CheckpointError(f"{path}: tensor {name!r}: {info.nbytes} bytes for shape "
                                  f"{list(shape)} {dtype}")
        if 8 + n + end > size:
            raise CheckpointError(f"{path}: truncated: tensor {name!r} ends at byte {8 + n + end}, "
                                  f"file has {size} bytes")
        infos[name] = info
    # as the format requires (the safetensors library refuses anything else: "invalid
    # offset"): the byte ranges, in order, tile the data from its start to the file's end,
    # with no gap and no overlap. Two names at exactly the same range are kept (a shared
    # tensor: shared_keys merges them once); a range that overlaps another partly, or is
    # shifted off the tiling, is an error naming the tensor.
    at, last = 0, None
    for info in sorted(infos.values(), key=lambda i: (i.offset, i.nbytes, i.name)):
        begin = info.offset - 8 - n
        if begin != at and (begin, begin + info.nbytes) != last:
            raise CheckpointError(
                f"{path}: tensor {info.name!r} takes data bytes {begin}..{begin + info.nbytes}, "
                f"where the tensors before it end at byte {at}: overlapping or shifted "
                "data_offsets (not a safetensors file)")
        last = (begin, begin + info.nbytes)
        at = max(at, begin + info.nbytes)
    if 8 + n + at != size:
        raise CheckpointError(f"{path}: the tensors' data end at byte {8 + n + at}, the file "
                              f"has {size} bytes (not a safetensors file)")
    return infos, meta


class Checkpoint:
    """The tensors of one Hugging Face checkpoint directory, read lazily by element range."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if (self.path / INDEX).is_file():
            try:
                weight_map = json.loads((self.path / INDEX).read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{self.path / INDEX}: not a safetensors index: {e!r}") from None
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise CheckpointError(f"{self.path / INDEX}: weight_map is not an object of file names")
            files = sorted(set(weight_map.values()))
            for f in files:  # a shard is a file of this directory, no path beside its name
                if Path(f).name != f or f in (".", ".."):
                    raise CheckpointError(f"{self.path / INDEX} names shard {f!r}, outside "
                                          f"{self.path}: shards must be files of the checkpoint "
                                          "directory")
        elif (self.path / SINGLE).is_file():
            weight_map, files = None, [SINGLE]
        elif self.path.is_dir():
            raise CheckpointError(f"{self.path}: no {SINGLE} or {INDEX}")
        else:
            raise CheckpointError(f"{self.path}: not a checkpoint directory")
        self.tensors: dict[str, TensorInfo] = {}
        for f in files:
            if not (self.path / f).is_file():
                raise CheckpointError(f"{self.path / INDEX} names shard {f}, which is missing")
            infos, _ = read_header(self.path / f)
            for name, info in infos.items():
                if weight_map is not None and weight_map.get(name) != f:
                    continue
                self.tensors[name] = info
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self.tensors))
            if missing:
                raise CheckpointError(f"{self.path / INDEX} maps {missing[0]!r} to "
                                      f"{weight_map[missing[0]]}, which does not hold it")
        self._maps: dict[Path, mmap.mmap] = {}
        self._arrays: dict[Path, np.ndarray] = {}  # read-only arrays over the maps (addresses)

    def files(self) -> list[Path]:
        return sorted({t.file for t in self.tensors.values()})

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files())

    def open(self) -> None:
        """Map every file read-only: the file's pages stay page cache, not this process's
        anonymous memory (a writable private mapping would copy every page it touches);
        read in order, so the kernel reads ahead."""
        for f in self.files():
            if f not in self._maps:
                fd = os.open(f, os.O_RDONLY)
                try:
                    self._maps[f] = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
                finally:
                    os.close(fd)
                if hasattr(self._maps[f], "madvise"):
                    self._maps[f].madvise(mmap.MADV_SEQUENTIAL)

    def view(self, name: str, start: int, n: int) -> torch.Tensor:
        """Elements start .. start+n-1 of tensor `name`, without copying (after open())."""
        info = self.tensors[name]
        if n == 0:
            return torch.empty(0, dtype=info.torch_dtype)
        if info.file not in self._maps:
            self.open()
        return torch.frombuffer(self._maps[info.file], dtype=info.torch_dtype, count=n,
                                offset=info.offset + start * info.itemsize)

    def address(self, name: str, start: int, n: int) -> int:
        """The memory address of element `start` of tensor `name` (after open()), for the
        fused kernels; elements start .. start+n-1 must lie in the tensor. Valid until
        close()."""
        info = self.tensors[name]
        if not 0 <= start <= start + n <= info.numel:
            raise IndexError(f"tensor {name!r}: elements {start}..{start + n} outside {info.numel}")
        if info.file not in self._arrays:
            if info.file not in self._maps:
                self.open()
            self._arrays[info.file] = np.frombuffer(self._maps[info.file], dtype=np.uint8)
        return self._arrays[info.file].ctypes.data + info.offset + start * info.itemsize

    def close(self) -> None:
        self._arrays.clear()
        for m in self._maps.values():
            try:
                m.close()
            except BufferError:  # a view is still alive; the mapping goes with it
                pass
        self._maps.clear()


def copy_model_files(out_dir: Path, sources: list[Path]) -> None:
    """Each of COPIED into `out_dir` from the first of `sources` that has it."""
    for f in COPIED:
        source = next((s for s in sources if (Path(s) / f).is_file()), None)
        if source is not None:
            shutil.copy2(Path(source) / f, Path(out_dir) / f)


def shard_plan(tensors: list[tuple[str, str, tuple[int, ...]]], max_shard_bytes: int) -> list[list]:
    """Split (name, dtype, shape) in order into shards of at most max_shard_bytes (a larger
    tensor gets a shard of its own), as save_pretrained does."""
    shards, current, size = [], [], 0
    for name, dtype, shape in tensors:
        nbytes = math.prod(shape) * DTYPES[dtype][1]
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, dtype, shape))
        size += nbytes
    if current or not shards:
        shards.append(current)
    return shards


def _named(e: OSError, path: Path) -> OSError:
    """`e` with `path` as its file name when it has none."""
    if e.filename is not None:
        return e
    return type(e)(e.errno, e.strerror or str(e), str(path))


class ShardedWriter:
    """Writes tensors in plan order, chunk by chunk, into save_pretrained's file layout."""

    def __init__(self, out_dir: Path, tensors: list[tuple[str, str, tuple[int, ...]]],
                 max_shard_bytes: int, metadata: dict[str, str] | None = None):
        self.out_dir = Path(out_dir)
        self.plan = shard_plan(tensors, max_shard_bytes)
        n = len(self.plan)
        self.names = [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                                              for i in range(n)]
        self.metadata = {"format": "pt", **(metadata or {})}
        self._queue = [(s, name, dtype, shape) for s, shard in enumerate(self.plan)
                       for name, dtype, shape in shard]
        self._pos = 0  # index into _queue of the tensor being written
        self._left = 0  # bytes still owed to it
        self._fh = None
        self._shard = -1

    def _open_shard(self, s: int) -> None:
        if self._fh is not None:
            self._fh.close()
        header, offset = {}, 0
        for name, dtype, shape in self.plan[s]:
            nbytes = math.prod(shape) * DTYPES[dtype][1]
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        header["__metadata__"] = self.metadata
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
        try:
            self._fh = open(self.out_dir / self.names[s], "wb")
            self._fh.write(struct.pack("<Q", len(raw)) + raw)
        except OSError as e:
            raise _named(e, self.out_dir / self.names[s]) from None
        self._shard = s

    def write(self, name: str, chunk: torch.Tensor) -> None:
        """Append `chunk` (contiguous, the tensor's dtype) to tensor `name`, in plan order."""
        if self._left == 0:
            s, expected, dtype, shape = self._queue[self._pos]
            if name != expected:
                raise RuntimeError(f"writer expected tensor {expected!r}, got {name!r}")
            if s != self._shard:
                self._open_shard(s)
            self._left = math.prod(shape) * DTYPES[dtype][1]
            self._pos += 1
        data = memoryview(chunk.contiguous().view(torch.uint8).numpy()).cast("B")
        if len(data) > self._left:
            raise RuntimeError(f"tensor {name!r}: {len(data)} bytes written, {self._left} owed")
        try:
            self._fh.write(data)
        except OSError as e:  # a full disk: name the shard (write() itself names nothing)
            raise _named(e, self.out_dir / self.names[self._shard]) from None
        self._left -= len(data)

    def close(self) -> None:
        if self._pos != len(self._queue) or self._left:
            raise RuntimeError("writer closed before every tensor was written")
        if self._fh is not None:
            try:
                self._fh.close()  # flushes: a full disk can show only here
            except OSError as e:
                raise _named(e, self.out_dir / self.names[self._shard]) from None
        if len(self.plan) > 1:
            total = sum(math.prod(sh) * DTYPES[d][1] for shard in self.plan for _, d, sh in shard)
            index = {"metadata": {"total_size": total},
                     "weight_map": {name: self.names[s] for s, shard in enumerate(self.plan)
                                    for name, _, _ in shard}}
            (self.out_dir / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
