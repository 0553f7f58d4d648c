"""The warm worker: each local job's Python forked from one process that has already
imported torch, transformers and the other heavy libraries.

On the tiny suite a job is mostly its fixed cost: interpreter start-up and
`from transformers import ...` take about 4 s of every job (bench/evaljobs.py), against well
under a second of work. A local run (`snakemake --cores N`) starts one server when its first
job is about to run (`start`, from the Snakefile's `onstart`); the rules run their scripts as
`python ordermerge/warm.py SCRIPT ARGS...` (the client; `python -m ordermerge.warm` is the
same), which hands its argument vector, working directory, environment and its
stdin/stdout/stderr to the server; the server forks, and the child runs SCRIPT as
`python SCRIPT ARGS...` would (`runpy`, as `__main__`), with the job's own files as its
standard streams. The client waits for it, forwards the signals it gets (Snakemake
cancelling a job, Ctrl-C) to the child's process group, appends one line with the child's
CPU time and peak memory to its stderr (the job's log: the cost table reads it, since
Snakemake's benchmark sees only the client's process tree), and exits with the child's
status.

Without a server the client simply becomes `python SCRIPT ARGS...` (`os.execv`): under
SLURM (the job's allocation must hold its processes, so a job never asks a server), without
the environment variable, or when the server is another interpreter, has a different
`sys.path` (a per-rule conda environment) or import-time environment, is gone or refuses. So the output of a job never
depends on whether it ran warm: the SLURM tests compare a cold SLURM run's bytes with a warm
local run's.

Only third-party libraries are preloaded in the server, and each child drops the server's own
`ordermerge` modules: a job always imports the project's files as they are when it starts. What a forked child shares with
its server: the interpreter's options and hash seed, and the state the libraries set up at
import (a new process would build the same). Nothing has run a model or started a thread
pool in the server, so forking is safe: the server is single-threaded.

Protocol (one Unix stream socket, one connection per job): the client sends a 4-byte
length and a JSON request {argv, cwd, env, executable, path, import_env} with its three standard file
descriptors attached (SCM_RIGHTS); the server answers with JSON lines: {"pid": N} once the
child runs (or {"refused": reason}), then {"status", "cpu_s", "max_rss_mb"} when it ends. A
client that goes away (killed) takes its child with it.
"""
from __future__ import annotations

import array
import json
import os
import re
import selectors
import signal
import socket
import struct
import sys
import tempfile
import time

ENV = "ORDERMERGE_WARM_SOCKET"
# imported once in the server; anything not installed is left out (a job that needs it
# fails by itself, as it would cold). Not pandas: it starts a thread (pyarrow's jemalloc),
# and the server forks only while it is single-threaded (tests/test_warm.py checks)
PRELOAD = ("numpy", "torch", "safetensors.torch", "tokenizers", "yaml", "jsonschema",
           "transformers", "numba", "scipy.stats", "matplotlib")
# attributes of transformers that import their modules (it loads them lazily)
PRELOAD_TRANSFORMERS = ("LlamaForCausalLM", "LlamaConfig", "AutoTokenizer", "AutoConfig",
                        "PreTrainedTokenizerFast", "AutoModelForCausalLM", "BertForMaskedLM",
                        "BertConfig", "AutoModelForQuestionAnswering",
                        "AutoModelForSequenceClassification", "AutoModelForMaskedLM")
# the client's last line on its stderr (the job's log), read by report/cost.py
USAGE = re.compile(r"^ordermerge\.warm: ran forked from the warm worker \(pid \d+\): "
                   r"status (-?\d+), CPU (\d+(?:\.\d+)?) s, peak RSS (\d+(?:\.\d+)?) MB$")
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
           signal.SIGUSR2)
KILL_GRACE_S = 10.0  # a child whose client went away: SIGTERM, then SIGKILL after this


# ---------------------------------------------------------------------------- the client
def _fallback(argv: list[str]) -> None:
    """Become `python SCRIPT ARGS...`."""
    os.execv(sys.executable, [sys.executable, *argv])


# environment variables that libraries read when they are imported (or the interpreter when
# it starts): a job whose values differ from the worker's runs cold
IMPORT_TIME_ENV = ("PYTHON", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH", "PYTORCH_",
                   "OMP_", "MKL_", "OPENBLAS_", "NUMBA_", "MPL", "CUDA_", "LD_")
# ... except the thread counts Snakemake sets per job (OMP_NUM_THREADS=<threads>, ...): the
# worker imports with 1 of each, so that no library starts a thread pool before a fork
# (OpenBLAS would, at load); each job's scripts set their own (runner.start), and anything
# that reads them later reads the job's values
# (not NUMBA_NUM_THREADS: numba re-reads its environment at each compile and refuses a value
# other than the one it imported with; Snakemake does not set it)
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GOTO_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def _identity() -> dict:
    """What must match between client and server for a forked child to be the job's own
    Python: the interpreter, its import path (sys.path[0], the script's directory, is set
    per job) and the environment variables read at import."""
    return {"executable": os.path.realpath(sys.executable), "path": sys.path[1:],
            "import_env": {k: v for k, v in sorted(os.environ.items())
                           if k.startswith(IMPORT_TIME_ENV) and k not in THREAD_ENV}}


def _read_line(conn: socket.socket, buf: bytearray) -> dict | None:
    while b"\n" not in buf:
        try:
            chunk = conn.recv(4096)
        except InterruptedError:
            continue
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return json.loads(line)


def client(argv: list[str]) -> int:
    """Run `python ARGV...` through the server named by $ORDERMERGE_WARM_SOCKET, or become it."""
    path = os.environ.get(ENV)
    if not path or "SLURM_JOB_ID" in os.environ:
        _fallback(argv)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                              **_identity()}).encode()
        conn.sendmsg([struct.pack("!I", len(payload)) + payload],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    except OSError:
        conn.close()
        _fallback(argv)
    buf = bytearray()
    try:
        started = _read_line(conn, buf)
    except (OSError, ValueError):
        started = None
    if started is None or "pid" not in started:  # refused, or gone before it forked
        conn.close()
        _fallback(argv)
    pid = started["pid"]

    def forward(signum, _frame):
        _signal_group(pid, signum)
    for s in SIGNALS:
        signal.signal(s, forward)
    try:
        done = _read_line(conn, buf)
    except (OSError, ValueError):
        done = None
    if done is None:
        forward(signal.SIGKILL, None)
        print(f"ordermerge.warm: the warm worker went away while its child {pid} ran "
              f"{argv[0]}; the child was killed", file=sys.stderr, flush=True)
        return 1
    status = done["status"]
    print(f"ordermerge.warm: ran forked from the warm worker (pid {pid}): status {status}, "
          f"CPU {done['cpu_s']:.2f} s, peak RSS {done['max_rss_mb']:.0f} MB",
          file=sys.stderr, flush=True)
    if status < 0:  # killed by a signal: end the same way, as the job's shell expects
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


def usage_cpu_s(log: str | os.PathLike) -> float | None:
    """The CPU seconds of a job that ran forked from the warm worker, from its log's last
    line; None for a job that ran as its own process (or a log that is missing)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 512))
            tail = f.read().decode("utf-8", "replace").rstrip("\n").rsplit("\n", 1)[-1]
    except OSError:
        return None
    m = USAGE.match(tail)
    return float(m.group(2)) if m else None


# ---------------------------------------------------------------------------- the server
def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


# runner.TRACE_ENV (not imported: the server's modules are not the job's): with it set, a
# child records the top-level name of every module its import statements name, on the
# import function (runner.imported_distributions reads it), since the worker's preloaded
# modules hide from sys.modules what the job itself imports
TRACE_ENV = "ORDERMERGE_TRACE_IMPORTS"


def _record_imports() -> None:
    import builtins
    original = builtins.__import__
    tops: set[str] = set()

    def recording(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0:
            tops.add(name.split(".")[0])
        return original(name, globals, locals, fromlist, level)

    recording.ordermerge_tops = tops
    builtins.__import__ = recording


def _run_child(req: dict, fds: list[int], close: list[int]) -> None:
    """In the forked child: become the job, run its script, exit. Never returns."""
    code = 1
    try:
        try:  # the client signals the child's group (its own subprocesses too)
            os.setpgid(0, 0)
        except OSError:  # the server set it first
            pass
        for s in SIGNALS + (signal.SIGCHLD,):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in set(close) - set(fds):
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in set(fds) - {0, 1, 2}:
            os.close(fd)
        for name in [m for m in sys.modules if m == "ordermerge" or m.startswith("ordermerge.")]:
            del sys.modules[name]  # the project's code is always imported afresh
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        script = req["argv"][0]
        sys.argv = list(req["argv"])
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
        if os.environ.get(TRACE_ENV):
            _record_imports()
        import runpy
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = _exit_code(e.code)
        except KeyboardInterrupt:
            sys.excepthook(*sys.exc_info())
            code = 128 + signal.SIGINT
        except BaseException:  # noqa: BLE001 - as the interpreter does: report, exit 1
            sys.excepthook(*sys.exc_info())
            code = 1
        import atexit
        import threading
        threading._shutdown()  # what interpreter exit does: join non-daemon threads, then atexit
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - a child must never return into the server's loop
        try:
            import traceback
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    fds = array.array("i")
    data, ancdata, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, raw in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(raw[:len(raw) - len(raw) % fds.itemsize])
    if len(data) < 4:
        raise ValueError("short request")
    (n,) = struct.unpack("!I", data[:4])
    body = bytearray(data[4:])
    while len(body) < n:
        chunk = conn.recv(n - len(body))
        if not chunk:
            raise ValueError("request cut short")
        body += chunk
    return json.loads(body), list(fds)


def _preload() -> None:
    import importlib
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - not installed or broken: the job imports it itself
            pass
    if "transformers" in sys.modules:
        for attr in PRELOAD_TRANSFORMERS:
            try:
                getattr(sys.modules["transformers"], attr)
            except Exception:  # noqa: BLE001
                pass


def serve(path: str, parent: int) -> None:
    """Listen on `path` until `parent` (the Snakemake process) is gone or SIGTERM."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1024)  # clients queue here while the libraries import
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = _identity()  # before the imports, which may set variables of their own
    before = dict(os.environ)
    _preload()
    # what the imports set (torch._inductor: its cache directory): a cold job's imports set
    # them too, so each child gets them where its own environment does not say otherwise
    added = {k: v for k, v in os.environ.items() if before.get(k) != v}
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    children: dict[int, dict] = {}  # pid -> {conn, pidfd, kill_at}
    try:
        while not stop:
            if os.getppid() != parent:
                break
            for key, _ in sel.select(timeout=0.5):
                if key.data == "accept":
                    conn, _ = listener.accept()
                    _start(conn, sel, listener, children, me, added)
                    continue
                what, pid = key.data
                if pid not in children:  # reaped earlier in this round
                    continue
                if what == "exit":
                    _reap(pid, sel, children)
                    continue
                try:  # the client spoke or went away: it sends nothing after its request
                    gone = key.fileobj.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    gone = True
                if gone and children[pid]["kill_at"] is None:
                    _signal_group(pid, signal.SIGTERM)
                    children[pid]["kill_at"] = time.monotonic() + KILL_GRACE_S
                    sel.unregister(key.fileobj)
            now = time.monotonic()
            for pid, c in children.items():
                if c["kill_at"] is not None and now > c["kill_at"]:
                    _signal_group(pid, signal.SIGKILL)
                    c["kill_at"] = float("inf")
    finally:
        for pid in list(children):
            _signal_group(pid, signal.SIGTERM)
        listener.close()
        try:
            os.unlink(path)
        except OSError:
            pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _start(conn, sel, listener, children, me, added) -> None:
    """Read one request, fork its child, answer with its pid."""
    conn.settimeout(30)
    fds: list[int] = []
    try:
        req, fds = _recv_request(conn)
        ident = {k: req.get(k) for k in ("executable", "path", "import_env")}
        if ident != me:
            conn.sendall(json.dumps({"refused": "another interpreter or import path"}).encode()
                         + b"\n")
            conn.close()
            return
        if len(fds) != 3:
            raise ValueError(f"{len(fds)} file descriptors, not 3")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            _run_child({**req, "env": {**added, **req["env"]}}, fds,
                       [listener.fileno(), conn.fileno(), *(k.fd for k in sel.get_map().values())])
        try:  # the child's own group, set from both sides: it exists before the client hears
            os.setpgid(pid, pid)  # the pid, so a signal forwarded at once reaches the child
        except OSError:
            pass
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # the client hears nothing but EOF and runs the job itself: no child
            os.kill(pid, signal.SIGKILL)  # may run beside it
            os.waitpid(pid, 0)
            raise
        children[pid] = {"conn": conn, "pidfd": pidfd, "kill_at": None}
        sel.register(pidfd, selectors.EVENT_READ, ("exit", pid))
        sel.register(conn, selectors.EVENT_READ, ("conn", pid))
        try:
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except OSError:  # the client is gone: its connection reads as closed next round,
            pass  # and the child is stopped then
        return
    except (OSError, ValueError):
        conn.close()
    finally:
        for fd in fds:
            os.close(fd)


def _reap(pid: int, sel, children) -> None:
    c = children.pop(pid)
    sel.unregister(c["pidfd"])
    os.close(c["pidfd"])
    _, status, usage = os.wait4(pid, 0)
    conn = c["conn"]
    if c["kill_at"] is None:
        sel.unregister(conn)
        try:
            conn.sendall(json.dumps({
                "status": os.waitstatus_to_exitcode(status),
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "max_rss_mb": usage.ru_maxrss / 1024}).encode() + b"\n")
        except OSError:
            pass
    conn.close()


# ---------------------------------------------------------------------------- start, stop
_server: dict = {}


def start(cwd: str | os.PathLike = ".") -> str:
    """Start a server for this process's jobs (the Snakemake process) and point them at it
    ($ORDERMERGE_WARM_SOCKET, which the local executor's jobs inherit). `cwd`: the project
    directory (the server runs `-m ordermerge.warm` from there, as the jobs' clients do).
    Returns the socket's path, or "" when the server did not come up (the jobs then run as
    their own processes). It stops with `stop`, or by itself once this process is gone."""
    import subprocess
    if _server:
        return _server["path"]
    if sys.platform != "linux" or not hasattr(os, "pidfd_open"):
        return ""  # fork-safety elsewhere (macOS frameworks) is not assured: jobs run cold
    d = tempfile.mkdtemp(prefix="ordermerge-warm-")  # short: a socket path has ~100 bytes
    path = os.path.join(d, "socket")
    proc = subprocess.Popen([sys.executable, "-m", "ordermerge.warm", "--serve", path,
                             "--parent", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, cwd=cwd,
                            env={**os.environ, **dict.fromkeys(THREAD_ENV, "1")})
    # the socket exists once it listens (before the imports); jobs queue on it meanwhile
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if not os.path.exists(path):
        proc.kill()
        proc.wait()
        os.rmdir(d)
        return ""
    _server.update(proc=proc, path=path, dir=d)
    os.environ[ENV] = path
    return path


def stop() -> None:
    """Stop the server `start` began (its running children get SIGTERM) and remove its
    socket directory."""
    import subprocess
    if not _server:
        return
    os.environ.pop(ENV, None)
    proc = _server["proc"]
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for remove, path in ((os.unlink, _server["path"]), (os.rmdir, _server["dir"])):
        try:  # the server removes its socket itself when it stops in time
            remove(path)
        except OSError:
            pass
    _server.clear()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        if len(argv) != 4 or argv[2] != "--parent":
            print("usage: python -m ordermerge.warm --serve SOCKET --parent PID", file=sys.stderr)
            return 2
        serve(argv[1], int(argv[3]))
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0] + "\n\nusage: python -m ordermerge.warm SCRIPT [ARGS...]\n"
              "       python -m ordermerge.warm --serve SOCKET --parent PID",
              file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    return client(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
