"""Run the workflow in a throwaway copy of the project."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the shared reduced run's config files (tests/conftest.py), relative to its project copy
REDUCED_ARGS = ("--configfile", "config.yaml", "reduced.yaml")
COPIED = ("Snakefile", "config.yaml", "config", "rules", "scripts", "ordermerge", "envs",
          "slurm", "profiles")


def copy_project(dest: Path, bare: bool = True) -> Path:
    """A copy of the project; `bare`: its config.yaml without tasks, multi-task groups, Table 4,
    figures, LoRA runs and general benchmarks,
    so that the test's own config file decides them (layered files cannot remove keys)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    copy_kernel_cache(dest)  # the kernels as compiled for these sources (tests/kernels.py)
    shutil.copy2(ROOT / "tests" / "data" / "reduced.yaml", dest / "reduced.yaml")
    if bare:
        import yaml
        cfg = yaml.safe_load((dest / "config.yaml").read_text())
        cfg["tasks"] = {}
        cfg.pop("multitask", None)
        # they name tasks of config.yaml (general_eval: its tiny benchmarks on every task)
        cfg["table4"] = cfg["figures"] = cfg["lora"] = cfg["general_eval"] = None
        cfg.pop("models", None)
        (dest / "config.yaml").write_text(yaml.safe_dump(cfg))
        shutil.copystat(ROOT / "config.yaml", dest / "config.yaml")
    git_commit(dest)
    return dest


def copy_kernel_cache(dest: Path) -> None:
    """This checkout's numba cache files (index and compiled code) into the project copy at
    `dest`, beside its copied sources (tests/kernels.py)."""
    for f in (p for pattern in ("*.nbi", "*.nbc")
              for p in (ROOT / "ordermerge").rglob(f"__pycache__/{pattern}")):
        to = dest / f.relative_to(ROOT)
        to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, to)


def git_commit(dest: Path) -> None:
    """Make the copy a git checkout with everything committed, as a clone is: records then
    name a commit that an audit can compare the code with."""
    (dest / ".gitignore").write_text("results/\n.snakemake/\n__pycache__/\n")
    git = ["git", "-C", str(dest), "-c", "user.name=ordermerge tests",
           "-c", "user.email=tests@ordermerge.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy of the project"]):
        subprocess.run(git + args, check=True, capture_output=True)


def env_with_python() -> dict[str, str]:
    """The rules call `python`: make it this interpreter, as an activated environment would."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900,
              env: dict[str, str] | None = None):
    """`env`: variables added to the jobs' environment. The local executor only: SLURM_CONF
    is /dev/null (dryrun.NO_SLURM: the SLURM plugin's import-time scontrol fails at once)."""
    from ordermerge.workflow.dryrun import NO_SLURM
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env={**env_with_python(), **NO_SLURM, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, list[str]]:
    """rule -> first output of each job `snakemake -n` would run."""
    proc = snakemake(workdir, "-n", *args)
    out = proc.stdout + proc.stderr
    jobs: dict[str, list[str]] = {}
    for m in re.finditer(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    output: ([^,\n]+)", out, re.M):
        jobs.setdefault(m.group(1), []).append(m.group(2))
    for m in re.finditer(r"^(?:local)?rule (\w+):\n    input:", out, re.M):
        jobs.setdefault(m.group(1), [])
    if "Nothing to be done" in out:
        return {}
    return jobs


_RULE_OUTPUTS = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.io import is_flagged
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path("Snakefile"),
                      config_settings=ConfigSettings(configfiles=[Path(f) for f in sys.argv[2:]]),
                      workdir=Path("."))
    rule = wf._workflow.get_rule(sys.argv[1])  # no public accessor for a rule's flags
    print(json.dumps([[str(f), is_flagged(f, "temp")] for f in rule.output]))
"""


def plain(pattern: str) -> str:
    """An output pattern without its wildcard constraints: {kind,sft} -> sft (a fixed
    value), {epoch,\\d+} -> {epoch}."""
    return re.sub(r"\{(\w+),([^{}]*)\}", lambda m: m.group(2) if re.fullmatch(r"[\w-]+", m.group(2))
                  else "{" + m.group(1) + "}", pattern)


def rule_outputs(workdir: Path, rule: str, *configfiles: str) -> list[tuple[str, bool]]:
    """(output pattern, marked temp) of `rule` under the given config files."""
    from ordermerge.workflow.dryrun import NO_SLURM
    proc = subprocess.run([sys.executable, "-c", _RULE_OUTPUTS, rule, *configfiles], cwd=workdir,
                          capture_output=True, text=True, check=True, env={**os.environ, **NO_SLURM})
    return [tuple(x) for x in __import__("json").loads(proc.stdout.strip().splitlines()[-1])]


def check_job_imports(done: Path) -> tuple[int, set[str], set[str]]:
    """Check every job of a finished run made with runner.TRACE_ENV set: the package files
    its process imported are among its inputs as Snakemake recorded them (a merge's
    registry entry, a param of its job, stands for merge/methods.py), and the direct
    dependencies it loaded are pinned in its rule's envs/ file. Returns (logs checked,
    rules seen, direct dependencies loaded)."""
    import base64
    import json

    import yaml
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from ordermerge.runner import TRACE, TRACE_PACKAGES
    from test_envs import direct_requirements
    direct = set(direct_requirements())
    checked, rules, used = 0, set(), set()
    for meta in (done / ".snakemake/metadata").iterdir():
        m = json.loads(meta.read_text())
        for log in m.get("log") or []:
            text = (done / log).read_text().splitlines()
            lines = [ln for ln in text if ln.startswith(TRACE)]
            assert len(lines) == 1, f"{log}: {len(lines)} import lines (rule {m['rule']})"
            imported = set(lines[0].removeprefix(TRACE).split())
            assert "ordermerge/utils.py" in imported  # every entry point imports it
            undeclared = sorted(imported - set(m["input"]))
            if any('"fused_tv_mode"' in str(v) for v in m["params"]):
                # a merge depends on its method's registry entry, a param of its job, rather
                # than on the whole registry file (ordermerge.workflow.plan.Plan.merge_code)
                undeclared.remove("ordermerge/merge/methods.py")
            assert not undeclared, f"rule {m['rule']} ({log}) imported {undeclared}, not among its inputs"
            env = yaml.safe_load(base64.b64decode(m["conda_env"]))
            pinned = {canonicalize_name(Requirement(r).name)
                      for d in env["dependencies"] if isinstance(d, dict) for r in d["pip"]}
            loaded = {canonicalize_name(d) for ln in text if ln.startswith(TRACE_PACKAGES)
                      for d in ln.removeprefix(TRACE_PACKAGES).split()}
            used |= loaded & direct
            assert not (loaded & direct) - pinned, \
                f"rule {m['rule']} ({log}) loaded {sorted((loaded & direct) - pinned)}, not in {env['name']}"
            checked += 1
            rules.add(m["rule"])
    return checked, rules, used



def made_once(tmp_path_factory, name: str, make) -> Path:
    """`make(path)` run once per test session, shared by the pytest-xdist workers: the first
    worker to ask makes it under a lock, where it stays (paths recorded inside remain true),
    and marks it complete; the others wait for the lock and read it. For outputs the tests
    only read (a converted checkpoint, a reference run). Without xdist it is made in this
    session's temporary directory."""
    import fcntl
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = shared / "made-once" / name
    done = out.parent / f"{name}.complete"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            if out.exists():
                shutil.rmtree(out)  # left by a worker that died making it: ours to remove
            make(out)
            done.touch()
    return out


# the tiny base's pretraining for the tests that compare backends and scorers on it,
# shortened from config.yaml's 300 steps: they compare on the tiny suite's architecture,
# tokenizer and checkpoint format, which the length of its pretraining does not change
TINY_BASE_STEPS = 60


def tiny_base(tmp_path_factory) -> Path:
    """The tiny suite's base (tokenizer trained and model pretrained TINY_BASE_STEPS steps by
    the workflow), made once per test session for every module that reads it (test_vllm.py,
    test_general.py)."""
    def make(out: Path) -> None:
        import yaml
        wd = copy_project(out.parent / "tiny-base-project", bare=False)
        (wd / "short.yaml").write_text(yaml.safe_dump({"model": {"pretrain": {"steps": TINY_BASE_STEPS}}}))
        snakemake(wd, "results/base/tiny-llama/model", "--configfile", "config.yaml", "short.yaml")
        shutil.copytree(wd / "results/base/tiny-llama/model", out)
        shutil.rmtree(wd)
    return made_once(tmp_path_factory, f"tiny-base-{TINY_BASE_STEPS}", make)


def free_port() -> int:
    """A TCP port free on this machine now: each distributed launch of the tests takes its
    own (accelerate's default, 29500, is shared by every launch, and two at once from two
    test workers meet in one rendezvous: a rank then waits forever for a peer that left)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
