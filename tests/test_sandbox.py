"""The sandbox against hostile completions: each fails within its limit, the harness lives on,
and nothing outside the program's directory changes."""
import os
import socket
import subprocess
import sys
import time

import pytest

from ordermerge.evaluate.sandbox import Limits, isolation, run_python

LIMITS = Limits(wall_s=4.0, cpu_s=2, memory_mb=512, file_mb=4)


@pytest.fixture
def outside(tmp_path):
    """A directory and a file outside the sandbox that no program may change."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "keep.txt").write_text("precious")
    return d


def unchanged(outside) -> bool:
    return sorted(p.name for p in outside.iterdir()) == ["keep.txt"] and \
        (outside / "keep.txt").read_text() == "precious"


HOSTILE = {
    "infinite loop": "while True:\n    pass\n",
    "sleep past the wall limit": "import time\ntime.sleep(60)\n",
    "fork bomb": "import os\nwhile True:\n    os.fork()\n",
    "memory bomb": "x = []\nwhile True:\n    x.append(bytearray(50 * 1024 * 1024))\n",
    "flood stdout": "while True:\n    print('x' * 10000)\n",
    "sys.exit(0) before the tests": "import sys\nsys.exit(0)\n",
    "os._exit(0) before the tests": "import os\nos._exit(0)\n",
    "write outside": "open({outside!r} + '/evil.txt', 'w').write('pwned')\n",
    "delete outside": "import os\nos.remove({outside!r} + '/keep.txt')\n",
    "overwrite outside": "open({outside!r} + '/keep.txt', 'w').write('pwned')\n",
    "kill the parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "kill the harness by pid": "import os, signal\nos.kill({harness}, signal.SIGKILL)\n",
    "open a socket to the harness": ("import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                                     "s.sendall(b'stolen')\n"),
    "read secrets from the environment": ("import os\nassert 'ORDERMERGE_TEST_SECRET' in os.environ, "
                                          "sorted(os.environ)\n"),
    "read secrets through /proc": ("data = open('/proc/{harness}/environ', 'rb').read()\n"
                                   "assert b'ORDERMERGE_TEST_SECRET' in data\n"),
}


# without root the program keeps the harness's uid: it could signal the harness or read
# its /proc entries and files, so those cases need the root mode (containers, CI)
NEEDS_ROOT = {"kill the parent", "kill the harness by pid", "read secrets through /proc",
              "delete outside", "overwrite outside", "write outside"}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_fails_in_time_and_changes_nothing(name, outside, monkeypatch):
    if name in NEEDS_ROOT and isolation()["mode"] != "root":
        pytest.skip("needs the root sandbox (a user of its own); this harness runs unprivileged")
    monkeypatch.setenv("ORDERMERGE_TEST_SECRET", "s3cr3t")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    program = HOSTILE[name].format(outside=str(outside), harness=os.getpid(),
                                   port=server.getsockname()[1])
    t0 = time.perf_counter()
    result = run_python(program, LIMITS)
    assert not result.passed, (name, result)
    # ended by the sandbox: the sleeping program would take 60 s, the loops forever. The
    # bound is half of that, not the limit plus a slack, so that a slow machine's start-up
    # (the sandbox's own wall clock starts after it) cannot fail the test
    assert time.perf_counter() - t0 < 30
    if name == "sleep past the wall limit":
        assert result.status == "timeout", result
    assert unchanged(outside)
    server.setblocking(False)
    with pytest.raises(BlockingIOError):  # no connection reached the harness's socket
        server.accept()
    server.close()
    # the harness is alive and can still run a good program
    assert run_python("print('ok')", LIMITS).passed


def test_a_good_program_passes_and_its_output_is_kept():
    r = run_python("import math\nprint(math.factorial(5))\nassert sum(range(4)) == 6\n", LIMITS)
    assert r.passed and r.status == "passed" and r.stdout_tail.startswith("120")
    r = run_python("assert 1 == 2, 'wrong'\n", LIMITS)
    assert not r.passed and r.status == "failed" and "AssertionError: wrong" in r.stderr_tail
    assert isolation()["network"] in ("namespace", "socket blocked (best effort)")


def test_private_tmp_and_files_in_its_own_directory(tmp_path):
    before = set(os.listdir("/tmp"))
    r = run_python("open('/tmp/ordermerge-sandbox-probe', 'w').write('x')\n"
                   "open('local.txt', 'w').write('fine')\nprint(open('local.txt').read())\n", LIMITS)
    assert r.passed and "fine" in r.stdout_tail
    if isolation()["mode"] == "root":  # a private /tmp: the real one is untouched
        assert "ordermerge-sandbox-probe" not in set(os.listdir("/tmp")) - before


@pytest.mark.skipif(isolation()["mode"] != "root", reason="needs the root sandbox (a user of its own)")
def test_kill_every_process_reaches_none_of_the_harness_nor_another_program():
    """kill(-1) from the sandbox: the harness, its other children and another sandboxed
    program running beside it live on (each program has a user id of its own; when they
    shared user nobody, this killed a canonical HumanEval solution evaluated in parallel)."""
    import threading
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = threading.Event()
    beside = {}

    def neighbour():
        started.set()
        beside["result"] = run_python("import time\ntime.sleep(3)\nprint('survived')\n", LIMITS)

    t = threading.Thread(target=neighbour)
    t.start()
    try:
        started.wait()
        time.sleep(1.0)  # the neighbour is asleep in its sandbox
        run_python("import os, signal\nos.kill(-1, signal.SIGKILL)\n", LIMITS)
        time.sleep(0.2)
        assert sleeper.poll() is None
        t.join()
        r = beside["result"]
        assert r.passed and r.status == "passed" and "survived" in r.stdout_tail, r
    finally:
        sleeper.kill()
        sleeper.wait()
        t.join()
