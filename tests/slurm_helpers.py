"""A local SLURM cluster for the tests, and what the scheduler knows about a workflow's jobs."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from workflow_helpers import ROOT

START, STOP = ROOT / "slurm/local/start.sh", ROOT / "slurm/local/stop.sh"
# .ci/run sets this: there a cluster that cannot start fails the tests instead of skipping them
REQUIRED = os.environ.get("ORDERMERGE_REQUIRE_SLURM") == "1"
# what the tests add to `--profile slurm`: check job states every 2 s rather than 40 s
FAST_POLL = ("--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2")


def unavailable() -> str | None:
    """Why this machine cannot run the local cluster, or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "the local SLURM cluster needs root (it installs packages and starts daemons)"
    if not (shutil.which("slurmctld") or Path("/usr/sbin/slurmctld").exists()) \
            and not shutil.which("apt-get"):
        return "no SLURM installed and no apt-get to install it"
    return None


# the test modules that use the cluster may run at once (pytest-xdist workers): they start it
# under one lock, each leaves a file naming its process while it uses it, and the last one out
# stops it if a test started it (a cluster that was up before the tests stays up)
SHARED = Path(tempfile.gettempdir()) / "ordermerge-slurm-tests"


@contextlib.contextmanager
def _locked():
    SHARED.mkdir(exist_ok=True)
    with open(SHARED / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _live_users() -> list[Path]:
    live = []
    for f in SHARED.glob("user-*"):
        try:
            os.kill(int(f.name.split("-")[1]), 0)
            live.append(f)
        except (ProcessLookupError, ValueError):
            f.unlink()  # a test process that died: its file only
    return live


def cluster_fixture():
    """The body of a module-scoped `cluster` fixture: the cluster is up while the module
    runs (or the module skips, or fails under ORDERMERGE_REQUIRE_SLURM=1)."""
    import pytest
    why = unavailable()
    if why:
        (pytest.fail if REQUIRED else pytest.skip)(why)
    me = SHARED / f"user-{os.getpid()}-{time.monotonic_ns()}"
    with _locked():
        try:
            started, _ = start_cluster()
        except RuntimeError as e:
            (pytest.fail if REQUIRED else pytest.skip)(str(e))
        if started:
            (SHARED / "started-by-tests").touch()
        me.touch()
    try:
        yield
    finally:
        with _locked():
            me.unlink()
            if not _live_users() and (SHARED / "started-by-tests").exists():
                stop_cluster()
                (SHARED / "started-by-tests").unlink()


def start_cluster() -> tuple[bool, str]:
    """(started anything, its report); raises RuntimeError when the cluster does not come up."""
    proc = subprocess.run([str(START)], capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"{START} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return " started " in proc.stderr, proc.stderr


def stop_cluster() -> None:
    subprocess.run([str(STOP)], capture_output=True, text=True, timeout=120)


def scheduler_jobs(workdir: Path) -> list[dict[str, str]]:
    """Every job the scheduler still knows (finished ones for MinJobAge) run in `workdir`, a
    project copy (workflow_helpers.copy_project), since the copy was made: an earlier test
    session whose temporary directories were removed can have used the same path within
    MinJobAge, and its jobs are not this copy's."""
    made = int((workdir / ".gitignore").stat().st_mtime)  # written by copy_project, once
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True,
                         check=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if fields.get("WorkDir") == str(workdir) and \
                time.mktime(time.strptime(fields["SubmitTime"], "%Y-%m-%dT%H:%M:%S")) >= made:
            jobs.append(fields)
    return jobs


def rule_of(job: dict[str, str]) -> str:
    """The rule (or group) a job of the slurm plugin runs, from its comment
    (rule_<name>_wildcards_<...> or rule_<group>_<rule>)."""
    comment = job["Comment"].removeprefix("rule_")
    return comment.split("_wildcards_")[0]


def stage_resources(configfile: Path) -> dict[str, dict]:
    """resources.<stage> of a config file, each merged over its default block."""
    res = yaml.safe_load(configfile.read_text())["resources"]
    return {stage: {**res["default"], **v} for stage, v in res.items()}


def memory_mb(value: str) -> int:
    """scontrol's MinMemoryNode (e.g. 2500M, 2G) in MB."""
    units = {"M": 1, "G": 1024, "T": 1024 * 1024}
    return int(float(value[:-1]) * units[value[-1]])


def minutes(value: str) -> int:
    """scontrol's TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, hms = value.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (s > 0)


def snakemake_cmd(*args: str) -> list[str]:
    # SIGINT on timeout: Snakemake cancels its SLURM jobs and exits; SIGTERM can leave it waiting
    return ["timeout", "-s", "INT", "-k", "30", "1200", sys.executable, "-m", "snakemake", *args]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Poll until `path` exists; fail if the process ended first."""
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {path} appeared")
        if time.time() > deadline:
            proc.send_signal(signal.SIGINT)
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


HOLD = "hold-sft"  # in a project copy: while this file exists, its SFT jobs wait (hold_sft)


def hold_sft(wd: Path, run: str = "run0") -> Path:
    """Make the copy's SFT script wait after it saves each resume state of `run` (other runs
    do not wait), for as long as `wd/hold-sft` exists (10 minutes at most), so that a test
    cancels or kills that SFT job mid-run by construction, however fast the machine. The
    wait writes nothing: the job's bytes are those of an unheld run. The script keeps its
    modification time, so that a finished run does not plan its SFT jobs again. Returns the
    hold file (remove it to let the job go on)."""
    script = wd / "scripts/sft.py"
    stat = script.stat()
    anchor = "p = parser(__doc__)\n"
    text = script.read_text()
    assert anchor in text, f"{script}: no {anchor!r} to hold before"
    hold = wd / HOLD
    patch = ("import time as _time\n"
             "import ordermerge.sft as _sft\n"
             "_save = _sft.Resume.save\n\n\n"
             "def _held_save(self, *a, **k):\n"
             "    _save(self, *a, **k)\n"
             "    end = _time.time() + 600\n"
             f"    while self.root.parent.name == {run!r} and Path({str(hold)!r}).exists() \\\n"
             "            and _time.time() < end:\n"
             "        _time.sleep(0.05)\n\n\n"
             "_sft.Resume.save = _held_save\n")
    script.write_text(text.replace(anchor, patch + anchor, 1))
    os.utime(script, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    hold.touch()
    return hold
