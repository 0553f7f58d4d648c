"""Small shared helpers: atomic outputs, seeds, JSON lines, hashing, the hub probe."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (global seed, task, run, epoch...).

    Stable across processes and platforms, unlike Python's hash().
    """
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


class InputError(ValueError):
    """Bad input to a library function (a setting, file, task or tensor, named in the
    message). The entry points print the message alone and exit 1 (runner.start)."""


class OutputError(ValueError):
    """An output path whose writing could destroy data that is not a previous output."""


def _host() -> str:
    return socket.gethostname().replace(os.sep, "_")


def _temp_prefix(final: Path, kind: str) -> str:
    """.NAME.KIND-{host}-{pid}-: the start of this process's temporary paths beside `final`
    (the random rest has no dash; remove_stale_temps reads host and pid back)."""
    return f".{final.name}.{kind}-{_host()}-{os.getpid()}-"


def _owner_dead(name: str, prefix: str) -> bool:
    """Whether a temporary path named `prefix` + "{host}-{pid}-{random}" was left by a
    process of this host that no longer runs (other hosts' paths and live ones are kept)."""
    head, _, _random = name[len(prefix):].rpartition("-")
    host, _, pid = head.rpartition("-")
    if not pid.isdigit() or host != _host():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def remove_stale_temps(final: str | os.PathLike) -> list[Path]:
    """Remove what killed writers of `final` left beside it: `.NAME.tmp-*` (a partial new
    output) and `.NAME.old-*` (a previous output moved aside), when their process is gone.
    Only paths of that pattern, which atomic_dir itself creates, are ever removed."""
    final = Path(final)
    removed: list[Path] = []
    if not final.parent.is_dir():
        return removed
    for kind in ("tmp", "old"):
        prefix = f".{final.name}.{kind}-"
        for p in final.parent.glob(glob_escape(prefix) + "*"):
            if _owner_dead(p.name, prefix):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                removed.append(p)
    return removed


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def check_output_dir(final: str | os.PathLike, *, inputs=(), previous=None,
                     what: str = "output", earlier: str = "a previous output",
                     act: str = "replace") -> Path:
    """Refuse an output directory whose replacement could destroy data: an empty path, the
    current directory or one above it, the file system root or the home directory, an
    input or a directory holding one, an existing file, or an existing directory that
    `previous(path)` (the writer's judge of its own record) does not accept as an earlier
    output of the same writer (said as `earlier`; the writer would `act` on it). Returns the
    path; OutputError names the reason."""
    if str(final).strip() == "":
        raise OutputError(f"the {what} path is empty (an unset shell variable?)")
    path = Path(final)
    real = path.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise OutputError(f"{what} {str(final)!r} is the current directory or holds it")
    if real == Path(real.anchor) or real == Path.home().resolve():
        raise OutputError(f"{what} {str(final)!r} is the file system root or the home directory")
    for i in inputs:
        if i is None:
            continue
        ir = Path(i).resolve()
        if real == ir:
            raise OutputError(f"{what} {str(final)!r} is the input {str(i)!r}")
        if real in ir.parents:
            raise OutputError(f"{what} {str(final)!r} holds the input {str(i)!r}")
    if path.is_symlink() or path.exists():
        if path.is_symlink() or not path.is_dir():
            raise OutputError(f"{what} {str(final)!r} exists and is not a directory")
        if previous is not None:
            why = previous(path)
            if why:
                raise OutputError(f"{what} {str(final)!r} exists and is not {earlier} "
                                  f"({why}): refusing to {act} it")
    return path


def yaml_error(path, e) -> str:
    """A YAML parse error of the file `path` as one line: 'FILE:LINE:COL: not valid YAML
    (problem)'."""
    mark = getattr(e, "problem_mark", None)
    where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    return f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})"


def lacks_record(path: Path, name: str, key: str) -> str | None:
    """Why the directory `path` is not an earlier output of a writer whose record is the
    JSON object `name` holding `key` (None: it is one) -- what an --overwrite may replace."""
    try:
        record = json.loads((path / name).read_text())
    except FileNotFoundError:
        return f"it has no {name}"
    except (OSError, ValueError) as e:
        return f"its {name} is unreadable: {e}"
    return None if isinstance(record, dict) and key in record else f"its {name} has no {key}"


def _reserve_beside(final: Path, kind: str, like_dir: bool) -> Path:
    """A new empty path beside `final` named .NAME.KIND-{host}-{pid}-{random}."""
    prefix = _temp_prefix(final, kind)
    if like_dir:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
    os.close(fd)
    return Path(name)


def swap_in(new: Path, final: Path) -> None:
    """Put the complete `new` at `final`. A previous `final` is first moved aside (renamed,
    not deleted), then `new` renamed into place, and only then the old one removed: any
    failure leaves the old or the new output whole. A previous output that cannot be
    removed stays beside it, hidden, and is named on stderr."""
    aside = None
    if final.is_symlink() or final.exists():
        is_dir = final.is_dir() and not final.is_symlink()
        aside = _reserve_beside(final, "old", is_dir)
        os.replace(final, aside)
    try:
        os.replace(new, final)
    except BaseException:
        if aside is not None:
            os.replace(aside, final)
        raise
    if aside is not None:
        errors = []
        if aside.is_dir() and not aside.is_symlink():
            def note(_f, p, exc):
                errors.append(f"{p}: {exc[1] if isinstance(exc, tuple) else exc}")
            if sys.version_info >= (3, 12):
                shutil.rmtree(aside, onexc=note)
            else:
                shutil.rmtree(aside, onerror=note)
        else:
            aside.unlink()
        if errors:
            print(f"ordermerge: {final} was replaced; its previous contents, moved aside to "
                  f"{aside}, could not all be removed ({errors[0]}): remove them by hand",
                  file=sys.stderr)


def exit_on_sigterm() -> None:
    """Make SIGTERM (scancel, Snakemake cancelling a job, `kill`) raise SystemExit, so that
    the writers' cleanup runs: a temporary directory being filled is removed and nothing is
    left at the output. (SIGKILL cannot be caught: remove_stale_temps handles that.)"""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, stop)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `final`; when the block ends cleanly, put it at
    `final` (swap_in: a previous `final` is moved aside first and removed last).

    On any error the temporary directory is removed and `final` is as it was. Temporary
    paths that killed writers of `final` left are removed first (remove_stale_temps).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = _reserve_beside(final, "tmp", True)
    try:
        yield tmp
        swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file beside `final` and rename it over `final` when closed cleanly
    (named like atomic_dir's, so that a killed writer's file goes on the next write)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(final, "tmp"), dir=final.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: object) -> None:
    with atomic_file(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


def decode_utf8(raw: bytes, path, first_line: int = 1, error=ValueError) -> str:
    """`raw` (text of `path` from line `first_line` on) as UTF-8; a byte that is not is
    `error`, naming file, line and column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + raw.count(b"\n", 0, e.start)
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise error(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                    f"{col})") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file; a line that is not UTF-8 or not JSON is a ValueError
    naming the file and line."""
    rows = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = decode_utf8(raw, path, lineno)
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {e}") from None
    return rows


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_file(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


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
