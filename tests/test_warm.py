"""The warm worker (ordermerge/warm.py): a job forked from it is the job `python SCRIPT ARGS`
would be (arguments, working directory, environment, standard streams, exit status,
signals), its project code is imported afresh, and wherever no server may serve (no
socket, under SLURM, another import path) the client becomes the plain process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ordermerge import warm
from ordermerge.report.cost import read_benchmarks

ROOT = Path(__file__).resolve().parent.parent

JOB = textwrap.dedent("""
    import json, os, sys
    print(json.dumps({"pid": os.getpid(), "argv": sys.argv, "cwd": os.getcwd(),
                      "env": os.environ.get("WARM_TEST"),
                      "preloaded": "transformers" in sys.modules,
                      "project_modules": sorted(m for m in sys.modules if m.startswith("ordermerge")),
                      "path0": sys.path[0]}))
    print("to stderr", file=sys.stderr)
    if len(sys.argv) > 1 and sys.argv[1] == "fail":
        raise ValueError("bad row 7")
    if len(sys.argv) > 1 and sys.argv[1] == "hook":
        sys.excepthook = lambda kind, exc, tb: print(f"one line: {exc}", file=sys.stderr)
        raise ValueError("bad key x")
    if len(sys.argv) > 1 and sys.argv[1] == "wait":
        import signal, time
        def stop(signum, _):
            print(f"cleanup after {signum}", flush=True)
            raise SystemExit(128 + signum)
        signal.signal(signal.SIGTERM, stop)
        open(sys.argv[2], "w").close()
        time.sleep(60)
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server of this test process (its parent), as the Snakefile's onstart starts one."""
    path = warm.start(ROOT)
    assert path and os.environ[warm.ENV] == path
    yield path
    warm.stop()
    assert not os.path.exists(path) and warm.ENV not in os.environ


@pytest.fixture
def job(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    return script


def run(script, *args, env=None, cwd=None, **kw):
    """The client as a rule runs it; stdout and stderr to files, as a job's log is."""
    out, err = Path(cwd or script.parent) / "out.txt", Path(cwd or script.parent) / "err.txt"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.run([sys.executable, "-m", "ordermerge.warm", str(script), *args],
                              stdout=o, stderr=e, cwd=cwd or ROOT, timeout=120,
                              env={**os.environ, "WARM_TEST": "yes", **(env or {})}, **kw)
    return proc, json.loads(out.read_text().splitlines()[0]), err.read_text()


def test_a_forked_job_is_the_job_python_would_run(server, job, tmp_path):
    proc, seen, err = run(job, "3", "x y", cwd=tmp_path)
    assert proc.returncode == 3
    assert seen["argv"] == [str(job), "3", "x y"] and seen["cwd"] == str(tmp_path)
    assert seen["env"] == "yes" and seen["path0"] == str(job.parent)
    assert seen["preloaded"]  # forked from the server, which imported transformers
    assert seen["project_modules"] == []  # the project's code is never the server's copy
    lines = err.splitlines()
    assert lines[0] == "to stderr" and warm.USAGE.match(lines[-1])
    assert int(warm.USAGE.match(lines[-1]).group(1)) == 3
    assert warm.usage_cpu_s(tmp_path / "err.txt") >= 0.0


def test_a_traced_forked_job_names_the_packages_it_imports_not_the_servers(server, tmp_path):
    """With runner.TRACE_ENV set, a forked job's imported distributions are those its own
    import statements name (the workflow test checks them against its envs/ file), not the
    server's preloaded torch and transformers, which a plain sys.modules scan would list."""
    from ordermerge import runner
    assert warm.TRACE_ENV == runner.TRACE_ENV
    script = tmp_path / "imports.py"
    script.write_text(f"import json, sys\nsys.path.insert(0, {str(ROOT)!r})\nimport yaml\n"
                      "from ordermerge.runner import imported_distributions\n"
                      "print(json.dumps(imported_distributions()))\n")
    _, traced, _ = run(script, env={runner.TRACE_ENV: "1"})
    assert "pyyaml" in {d.lower() for d in traced} and "torch" not in traced
    _, plain, _ = run(script)
    assert "torch" in plain and "transformers" in plain  # the server's modules, as sys.modules has them


def test_the_server_forks_while_single_threaded(server, job, tmp_path):
    """No preloaded library has started a thread (a fork copies only the forking one)."""
    run(job, cwd=tmp_path)  # returns once the server has imported everything
    pid = warm._server["proc"].pid
    threads = [(Path(f"/proc/{pid}/task") / t / "comm").read_text().strip()
               for t in os.listdir(f"/proc/{pid}/task")]
    assert len(threads) == 1, threads


def test_errors_reach_the_log_as_the_interpreter_prints_them(server, job, tmp_path):
    proc, _, err = run(job, "fail", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" in err and "ValueError: bad row 7" in err
    proc, _, err = run(job, "hook", cwd=tmp_path)  # the script's own excepthook is used
    assert proc.returncode == 1
    assert err.splitlines()[:2] == ["to stderr", "one line: bad key x"]


def test_signals_reach_the_child_and_a_killed_client_takes_its_child(server, job, tmp_path):
    ready = tmp_path / "ready"
    with open(tmp_path / "out.txt", "w") as o, open(tmp_path / "err.txt", "w") as e:
        client = subprocess.Popen([sys.executable, "-m", "ordermerge.warm", str(job), "wait",
                                   str(ready)], stdout=o, stderr=e, cwd=tmp_path)
        while not ready.exists():
            assert client.poll() is None, (tmp_path / "err.txt").read_text()
            time.sleep(0.05)
        child = json.loads((tmp_path / "out.txt").read_text().splitlines()[0])["pid"]
        assert child != client.pid
        client.send_signal(signal.SIGTERM)  # as Snakemake cancels a job
        assert client.wait(60) == 128 + signal.SIGTERM
    assert "cleanup after 15" in (tmp_path / "out.txt").read_text()
    ready.unlink()

    with open(tmp_path / "out.txt", "w") as o:
        client = subprocess.Popen([sys.executable, "-m", "ordermerge.warm", str(job), "wait",
                                   str(ready)], stdout=o, stderr=subprocess.DEVNULL, cwd=tmp_path)
        while not ready.exists():
            time.sleep(0.05)
        child = json.loads((tmp_path / "out.txt").read_text().splitlines()[0])["pid"]
        client.kill()  # SIGKILL: the client cannot forward it; the server sees it gone
        client.wait()
    for _ in range(600):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the child {child} of a killed client still runs")
    assert "cleanup after 15" in (tmp_path / "out.txt").read_text()


def test_jobs_run_side_by_side(server, job, tmp_path):
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    clients = [subprocess.Popen([sys.executable, "-m", "ordermerge.warm", str(job), "wait",
                                 str(r)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=tmp_path) for r in ready]
    while not all(r.exists() for r in ready):  # both wait at once: neither blocks the other
        assert all(c.poll() is None for c in clients)
        time.sleep(0.05)
    for c in clients:
        c.terminate()
    assert [c.wait(60) for c in clients] == [128 + signal.SIGTERM] * 2


@pytest.mark.parametrize("env", [{warm.ENV: ""}, {"SLURM_JOB_ID": "42"},
                                 {"PYTHONPATH": "/nonexistent-dir"},
                                 {"HF_HUB_OFFLINE": "0" if os.environ.get("HF_HUB_OFFLINE") == "1"
                                  else "1"}],
                         ids=["no-server", "under-slurm", "other-import-path",
                              "other-import-time-environment"])
def test_the_client_becomes_the_plain_process_where_no_server_may_serve(server, job, tmp_path,
                                                                          env):
    with open(tmp_path / "out.txt", "w") as o, open(tmp_path / "err.txt", "w") as e:
        client = subprocess.Popen([sys.executable, "-m", "ordermerge.warm", str(job), "4"],
                                  stdout=o, stderr=e, cwd=tmp_path,
                                  env={**os.environ, **env})
        assert client.wait(120) == 4
    seen = json.loads((tmp_path / "out.txt").read_text().splitlines()[0])
    assert seen["pid"] == client.pid  # exec'd: the client itself became the job
    assert not seen["preloaded"]
    err = (tmp_path / "err.txt").read_text()
    assert err == "to stderr\n" and warm.usage_cpu_s(tmp_path / "err.txt") is None


def test_the_server_stops_when_its_parent_is_gone(tmp_path):
    """A run killed hard (its Snakemake gone) leaves no server: it removes its socket and
    exits."""
    sock = tmp_path / "s"
    starter = textwrap.dedent(f"""
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, "-m", "ordermerge.warm", "--serve", {str(sock)!r},
                          "--parent", str(os.getpid())], start_new_session=True)
        while not os.path.exists({str(sock)!r}):
            time.sleep(0.05)
    """)
    subprocess.run([sys.executable, "-c", starter], cwd=ROOT, check=True, timeout=120)
    assert sock.exists()  # the parent has exited
    for _ in range(1200):
        if not sock.exists():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the server outlived its parent")


def test_the_cost_table_counts_a_forked_jobs_cpu(tmp_path):
    bench, logs = tmp_path / "benchmarks", tmp_path / "logs"
    for rel, log_tail in (("merge/t/avg", "ordermerge.warm: ran forked from the warm worker "
                                          "(pid 12): status 0, CPU 2.50 s, peak RSS 300 MB\n"),
                          ("merge/t/select", "done\n")):
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / f"{rel}.tsv").write_text("s\th:m:s\tmax_rss\tcpu_time\n1.5\t0:00:01\t10\t0.25\n")
        (logs / rel).parent.mkdir(parents=True, exist_ok=True)
        (logs / f"{rel}.log").write_text("a line\n" + log_tail)
    jobs = read_benchmarks(bench, logs_root=logs).set_index("path")
    assert jobs.loc["merge/t/avg.tsv", "cpu_s"] == pytest.approx(2.75)
    assert jobs.loc["merge/t/select.tsv", "cpu_s"] == pytest.approx(0.25)
    assert read_benchmarks(bench).set_index("path").loc["merge/t/avg.tsv", "cpu_s"] == 0.25


def test_help():
    proc = subprocess.run([sys.executable, "-m", "ordermerge.warm", "--help"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: python -m ordermerge.warm SCRIPT" in proc.stdout
