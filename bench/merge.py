"""Merge engine benchmark: the I/O floor, each method, and mergekit's counterpart, side by side.

Builds K synthetic bf16 Llama-shaped checkpoints (hidden 768, 12 layers, vocab
32000, about 134M parameters; about 70% of elements moved from the base, the
rest equal to it), then measures each contender in its own child process,
in-process after its imports (interpreter and torch start-up stay out), the
median of --repeats runs with the page cache warm. Memory is the peak of
RssAnon sampled every 2 ms: anonymous memory only, so file-backed page cache
(and mmap'd inputs) do not count. Also times whole-process start-up of
`ordermerge merge --help` against `python -c "import torch, safetensors"`, and the sha256
of the inputs that `ordermerge merge` records in merge.json after merging (not in the
methods' timings): with an empty hash cache, and on a next merge of the same inputs.

    python bench/merge.py                 # K=8 and K=16, 5 repeats, the paper's methods
    python bench/merge.py --k 3 --k 8 --methods task_arithmetic ties dare_ties
    python bench/merge.py --k 8 --repeats 3 --skip-mergekit
    python bench/merge.py --tiny --k 2 --repeats 1   # a smoke run at toy sizes
    python bench/merge.py --k 8 --skip-mergekit --finite-check   # the NaN/Inf check's cost

--finite-check [METHOD ...] also times those methods (all, when none is named) with
allow_nonfinite=True (no NaN/Inf check), alternating with the checked merge in one child
(after one untimed merge of each), and prints the checked median over the unchecked one.

--against REV is the regression guard: commit REV's `ordermerge/` is written out (git
archive) into a temporary directory and each method is timed with it and with this
checkout, side by side: --repeats rounds, each running one child per tree (old first in
even rounds, new first in odd ones, so a drift of the machine falls on both), each child
merging once untimed (numba's compile or cache load, the page cache) and once timed. It
prints each method's median wall in both trees, the ratio new / old of the medians and the
median of the rounds' ratios; a method REV lacks is reported as such. Run it before
submitting a change to the merge engine or its kernels:

    python bench/merge.py --against HEAD~1 --k 8 --methods average select resample

Each of our methods is compared with mergekit 0.1.5's counterpart (MERGEKIT): linear for
the average and the selections (mergekit has no selection), and mergekit's method of the
same name for task_arithmetic, ties, dare_ties, dare_linear, model_stock, sce, karcher,
multislerp, breadcrumbs, breadcrumbs_ties, della and della_linear. (Fisher merging, RegMean
and greedy soup read per-run data and have no mergekit counterpart.)

Prints a table and writes results/bench/merge.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
        "num_attention_heads": 12, "vocab_size": 32000}
TINY_SPEC = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2, "vocab_size": 256}
# our method -> (its settings here, mergekit's counterpart)
METHODS = {
    "average": ({}, "linear"),
    "select": ({"seed": 1}, "linear"),
    "resample": ({"seed": 1, "rounds": 4}, "linear"),
    "task_arithmetic": ({"lambda": 1.0}, "task_arithmetic"),
    "ties": ({"density": 0.2, "lambda": 1.0}, "ties"),
    "dare_linear": ({"drop": 0.5, "lambda": 1.0, "seed": 1}, "dare_linear"),
    "dare_ties": ({"drop": 0.5, "lambda": 1.0, "seed": 1}, "dare_ties"),
    "model_stock": ({}, "model_stock"),
    "sce": ({"select_topk": 0.1}, "sce"),
    "karcher": ({}, "karcher"),
    "multislerp": ({}, "multislerp"),
    "breadcrumbs": ({"density": 0.9, "gamma": 0.01, "lambda": 1.0}, "breadcrumbs"),
    "breadcrumbs_ties": ({"density": 0.9, "gamma": 0.01, "lambda": 1.0}, "breadcrumbs_ties"),
    "della": ({"density": 0.5, "epsilon": 0.1, "lambda": 1.0, "seed": 1}, "della"),
    "della_linear": ({"density": 0.5, "epsilon": 0.1, "lambda": 1.0, "seed": 1}, "della_linear"),
}
# mergekit's parameters for its counterpart: (per model, shared, reads the base)
MERGEKIT = {
    "linear": ({"weight": 1.0}, {}, False),
    "task_arithmetic": ({"weight": 1.0}, {}, True),
    "ties": ({"weight": 1.0, "density": 0.2}, {}, True),
    "dare_linear": ({"weight": 1.0, "density": 0.5}, {}, True),
    "dare_ties": ({"weight": 1.0, "density": 0.5}, {}, True),
    "model_stock": ({}, {}, True),  # unweighted
    "sce": ({}, {"select_topk": 0.1}, True),
    "karcher": ({}, {}, False),  # raw weights, uniform
    "multislerp": ({"weight": 1.0}, {}, True),
    "breadcrumbs": ({"weight": 1.0, "density": 0.9, "gamma": 0.01}, {}, True),
    "breadcrumbs_ties": ({"weight": 1.0, "density": 0.9, "gamma": 0.01}, {}, True),
    "della": ({"weight": 1.0, "density": 0.5, "epsilon": 0.1}, {}, True),
    "della_linear": ({"weight": 1.0, "density": 0.5, "epsilon": 0.1}, {}, True),
}


# ---------------------------------------------------------------- inputs
def build_inputs(workdir: Path, k: int, spec: dict) -> None:
    """base/ and s0..s{k-1}/ in workdir, bf16 safetensors; kept between runs (nothing is
    imported then)."""
    stamp = workdir / "spec.json"
    want = json.dumps({**spec, "k": k, "architectures": True})
    if stamp.is_file() and stamp.read_text() == want:
        return
    if (workdir.exists() and not stamp.is_file()
            and (not workdir.is_dir() or any(workdir.iterdir()))):
        raise SystemExit(f"--workdir {workdir.parent}: {workdir} holds files this benchmark did "
                         "not write (no spec.json); refusing to replace them")
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    stamp.write_text("building\n")  # ours from here on: an interrupted build is redone
    cfg = LlamaConfig(**spec, num_key_value_heads=spec["num_attention_heads"], dtype="bfloat16",
                      architectures=["LlamaForCausalLM"])
    with torch.device("meta"):
        shapes = {n: tuple(p.shape) for n, p in LlamaForCausalLM(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    base = {n: (torch.randn(s, generator=g) * 0.02).to(torch.bfloat16) for n, s in shapes.items()}
    for i, name in enumerate(["base"] + [f"s{j}" for j in range(k)]):
        d = workdir / name
        d.mkdir()
        cfg.save_pretrained(d)
        if name == "base":
            tensors = base
        else:
            tensors = {}
            for n, b in base.items():
                moved = torch.rand(b.shape, generator=g) < 0.7
                delta = (torch.randn(b.shape, generator=g) * 0.002).to(torch.bfloat16)
                tensors[n] = torch.where(moved, b + delta, b)
        save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    stamp.write_text(want)


# ---------------------------------------------------------------- child side
class AnonSampler:
    """Peak RssAnon of this process, sampled in a thread."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def rss_anon_kb() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss_anon_kb())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.rss_anon_kb()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss_anon_kb())


def floor_once(inputs: list[Path], out: Path) -> None:
    """Read every input byte and write an output of one checkpoint's size, 64 MiB at a time."""
    buf = bytearray(64 << 20)
    view = memoryview(buf)
    size = 0
    for d in inputs:
        with open(d / "model.safetensors", "rb", buffering=0) as fh:
            while n := fh.readinto(view):
                size += n
    per = size // len(inputs)
    out.mkdir()
    with open(out / "model.safetensors", "wb") as fh:
        left = per
        while left:
            n = min(left, len(buf))
            fh.write(view[:n])
            left -= n


def child(args) -> None:
    import torch  # noqa: F401  (imports stay out of the timings)

    work = Path(args.workdir)
    k = args.k[0]
    inputs = [work / f"s{i}" for i in range(k)]
    base = work / "base"
    if args.child.startswith("mergekit_"):
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
        method = args.child.removeprefix("mergekit_")
        params, shared, uses_base = MERGEKIT[method]
        spec = {"merge_method": method, "dtype": "bfloat16", "parameters": shared,
                "models": [{"model": str(p), "parameters": params} for p in inputs]}
        if uses_base:
            spec["base_model"] = str(base)
        config = MergeConfiguration.model_validate(spec)
        options = MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False,
                               lazy_unpickle=True)

        def once(out):
            run_merge(config, str(out), options=options)
    elif args.child == "floor":
        def once(out):
            floor_once(inputs, out)
    else:
        from ordermerge.merge.engine import merge_into
        from ordermerge.merge.methods import get
        method, _, variant = args.child.partition(":")

        def once(out, unchecked=variant == "unchecked"):
            out.mkdir()
            merge_into(out, method, inputs, base=base if get(method).needs_base else None,
                       **METHODS[method][0],
                       **({"allow_nonfinite": True} if unchecked else {}))  # older trees lack it
        if variant == "both":  # checked and unchecked alternating, each run after the other's
            return _alternate(once, args)
    if args.warmup:
        out = Path(tempfile.mkdtemp(dir=args.outdir)) / "out"
        once(out)
        shutil.rmtree(out.parent)
    times, peaks = [], []
    for r in range(args.repeats):
        out = Path(tempfile.mkdtemp(dir=args.outdir)) / "out"
        with AnonSampler() as s:
            t0 = time.perf_counter()
            once(out)
            times.append(time.perf_counter() - t0)
        peaks.append(s.peak / 1024)
        shutil.rmtree(out.parent)
    module = sys.modules.get("ordermerge")
    print(json.dumps({"times": times, "peak_anon_mb": max(peaks),
                      "module": getattr(module, "__file__", None)}))


def _alternate(once, args) -> None:
    """--finite-check's child: the checked merge and the unchecked one alternate (checked
    first in even rounds), so that a drift of the machine falls on both."""
    times = {False: [], True: []}
    for unchecked in (False, True):  # untimed: numba's compile or cache load, the page cache
        out = Path(tempfile.mkdtemp(dir=args.outdir)) / "out"
        once(out, unchecked)
        shutil.rmtree(out.parent)
    peaks = []
    for r in range(args.repeats):
        for unchecked in ((False, True) if r % 2 == 0 else (True, False)):
            out = Path(tempfile.mkdtemp(dir=args.outdir)) / "out"
            with AnonSampler() as s:
                t0 = time.perf_counter()
                once(out, unchecked)
                times[unchecked].append(time.perf_counter() - t0)
            peaks.append(s.peak / 1024)
            shutil.rmtree(out.parent)
    module = sys.modules.get("ordermerge")
    print(json.dumps({"times": times[False], "times_unchecked": times[True],
                      "peak_anon_mb": max(peaks), "module": getattr(module, "__file__", None)}))


# ---------------------------------------------------------------- parent side
def measure(name: str, k: int, args, tree: Path = ROOT, repeats: int | None = None,
            warmup: bool = False) -> dict:
    """`name` timed in a child process importing ordermerge from `tree`."""
    cmd = [sys.executable, __file__, "--child", name, "--k", str(k),
           "--repeats", str(repeats or args.repeats), "--workdir", str(args.workdir),
           "--outdir", str(args.outdir), *(["--warmup"] if warmup else [])]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res["module"] is not None and not Path(res["module"]).is_relative_to(tree):
        raise RuntimeError(f"{name}: the child imported {res['module']}, not the tree {tree}")
    out = {"wall_s": statistics.median(res["times"]), "runs_s": res["times"],
           "peak_anon_mb": res["peak_anon_mb"]}
    if "times_unchecked" in res:
        out["unchecked"] = {"wall_s": statistics.median(res["times_unchecked"]),
                            "runs_s": res["times_unchecked"], "peak_anon_mb": res["peak_anon_mb"]}
    return out


def source_tree(rev: str, dest: Path) -> str:
    """Commit `rev`'s ordermerge/ written out under `dest` (git archive: the repository and
    its worktrees are not touched); returns the commit's hash."""
    found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
                            f"{rev}^{{commit}}"], capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"--against {rev!r}: not a commit of the repository at {ROOT}")
    commit = found.stdout.strip()
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit, "ordermerge"],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"--against {rev!r}: git archive failed")
    return commit


def against(args, ks: list[int]) -> dict:
    """Each method with commit args.against's ordermerge and with this checkout's,
    alternating (see the module's docstring)."""
    report: dict = {"machine": os.uname().nodename, "cpus": os.cpu_count(),
                    "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d"),
                    "repeats": args.repeats, "by_k": {}}
    with tempfile.TemporaryDirectory(prefix="ordermerge-against-") as d:
        old_tree = Path(d)
        report["old"] = {"rev": args.against, "commit": source_tree(args.against, old_tree)}
        report["new"] = {"tree": str(ROOT), "commit": git_state()}
        print(f"new: {report['new']['commit']} (this checkout), old: {args.against} = "
              f"{report['old']['commit'][:12]}; {report['cpu']}, {report['cpus']} CPUs")
        for k in ks:
            wd = args.workdir / f"k{k}"
            build_inputs(wd, k, TINY_SPEC if args.tiny else SPEC)
            args_k = argparse.Namespace(**{**vars(args), "workdir": wd})
            res = {}
            print(f"\nK={k}: one timed merge per child after one untimed, {args.repeats} rounds")
            print(f"{'':18}{'old s':>9}{'new s':>9}{'new/old':>9}{'rounds new/old':>18}")
            for m in args.methods:
                runs: dict[str, list] = {"old": [], "new": []}
                try:
                    for r in range(args.repeats):
                        order = [("old", old_tree), ("new", ROOT)]
                        for label, tree in (order if r % 2 == 0 else order[::-1]):
                            runs[label].append(measure(m, k, args_k, tree, 1, True)["wall_s"])
                except RuntimeError as e:
                    res[m] = {"error": str(e).splitlines()[-1]}
                    print(f"{m:18}  failed in the {label} tree: {res[m]['error']}")
                    continue
                old_s, new_s = (statistics.median(runs[x]) for x in ("old", "new"))
                rounds = [n / o for n, o in zip(runs["new"], runs["old"])]
                res[m] = {"old_s": runs["old"], "new_s": runs["new"], "old_median_s": old_s,
                          "new_median_s": new_s, "ratio": new_s / old_s,
                          "round_ratio_median": statistics.median(rounds)}
                print(f"{m:18}{old_s:9.3f}{new_s:9.3f}{new_s / old_s:9.3f}"
                      f"{statistics.median(rounds):18.3f}")
            report["by_k"][str(k)] = res
    return report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def git_state() -> str:
    """This checkout's commit, with "+changes" where its ordermerge/ differs from it."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "ordermerge"],
                           capture_output=True, text=True).stdout.strip()
    return head[:12] + ("+changes" if dirty else "")


def input_hashes(wd: Path, k: int, repeats: int) -> dict:
    """The sha256 of the inputs that engine.merge writes in merge.json (the timings above are
    merge_into's, without it): median wall with an empty hash cache, then once cached."""
    from ordermerge import provenance
    sources = [wd / f"s{i}" for i in range(k)] + [wd / "base"]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "sha256.json"
        old = os.environ.get(provenance.HASH_CACHE_ENV)
        os.environ[provenance.HASH_CACHE_ENV] = str(cache)
        try:
            first = []
            for _ in range(repeats):
                cache.unlink(missing_ok=True)
                t0 = time.perf_counter()
                provenance.hash_inputs(sources)
                first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            provenance.hash_inputs(sources)
            again = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop(provenance.HASH_CACHE_ENV)
            else:
                os.environ[provenance.HASH_CACHE_ENV] = old
    return {"first_s": statistics.median(first), "again_s": again}


def startup(repeats: int) -> dict:
    cli = shutil.which("ordermerge")
    cmds = {"ordermerge_merge_help": [cli, "merge", "--help"] if cli else
            [sys.executable, "-m", "ordermerge.cli", "merge", "--help"],
            "import_torch_safetensors": [sys.executable, "-c", "import torch, safetensors"]}
    out = {}
    for name, cmd in cmds.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    out["ratio"] = out["ordermerge_merge_help"] / out["import_torch_safetensors"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, action="append", help="sub-models (repeatable; default 8 and 16)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ordermerge-bench")
    p.add_argument("--outdir", type=Path, default=None)
    p.add_argument("--skip-mergekit", action="store_true")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=["average", "select", "resample"])
    p.add_argument("--tiny", action="store_true", help="toy checkpoints (a smoke run)")
    p.add_argument("--json", type=Path, default=None,
                   help="where the results go (default results/bench/merge.json, or "
                        "merge-against.json with --against)")
    p.add_argument("--against", metavar="REV",
                   help="time each method with commit REV's ordermerge and this checkout's, "
                        "alternating, and print new / old (the regression guard)")
    p.add_argument("--warmup", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--finite-check", nargs="*", metavar="METHOD", default=None,
                   help="also time these methods (none named: every one of --methods) without "
                        "the NaN/Inf check, alternating with the checked merge")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    ks = args.k or [8, 16]
    args.outdir = args.outdir or args.workdir / "outputs"
    args.outdir.mkdir(parents=True, exist_ok=True)
    if args.against:
        write_report(args.json or ROOT / "results/bench/merge-against.json", against(args, ks))
        return
    checked = [] if args.finite_check is None else [
        m for m in args.methods if not args.finite_check or m in args.finite_check]
    report: dict = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "cpu": cpu_model(),
                    "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats, "by_k": {}}
    for k in ks:
        wd = args.workdir / f"k{k}"
        build_inputs(wd, k, TINY_SPEC if args.tiny else SPEC)
        args_k = argparse.Namespace(**{**vars(args), "workdir": wd})
        res = {"floor": measure("floor", k, args_k)}
        res["floor"]["ratio_to_floor"] = 1.0
        for m in args.methods:
            theirs = f"mergekit_{METHODS[m][1]}"
            if not args.skip_mergekit and theirs not in res:
                res[theirs] = measure(theirs, k, args_k)
                res[theirs]["ratio_to_floor"] = res[theirs]["wall_s"] / res["floor"]["wall_s"]
            # with --finite-check, the same merge without the NaN/Inf check, alternating
            r = measure(f"{m}:both" if m in checked else m, k, args_k)
            r["ratio_to_floor"] = r["wall_s"] / res["floor"]["wall_s"]
            if theirs in res:
                r["mergekit"] = theirs
                r["speedup_vs_mergekit"] = res[theirs]["wall_s"] / r["wall_s"]
            res[m] = r
            if m in checked:
                u = r.pop("unchecked")
                u["ratio_to_floor"] = u["wall_s"] / res["floor"]["wall_s"]
                r["finite_check_cost"] = r["wall_s"] / u["wall_s"]
                res[f"{m}:unchecked"] = u
        report["by_k"][str(k)] = res
        h = report.setdefault("input_hashes", {})[str(k)] = input_hashes(wd, k, args.repeats)
        print(f"\nmerge.json's input hashes (ordermerge merge and merge(), after merge_into): "
              f"{h['first_s']:.2f} s ({h['first_s'] / res['floor']['wall_s']:.2f}x floor) with "
              f"an empty hash cache, {h['again_s']:.3f} s on the next merge of the same inputs")
        print(f"\nK={k} (median of {args.repeats}, in-process after imports)")
        print(f"{'':18}{'wall s':>9}{'x floor':>9}{'vs mergekit':>13}{'peak anon MB':>14}")
        for name, r in res.items():
            print(f"{name:18}{r['wall_s']:9.2f}{r.get('ratio_to_floor', float('nan')):9.2f}"
                  f"{r.get('speedup_vs_mergekit', float('nan')):13.2f}{r['peak_anon_mb']:14.0f}")
        for m in checked:
            print(f"NaN/Inf check: {m} checked / unchecked = {res[m]['finite_check_cost']:.3f}")
    report["startup"] = startup(args.repeats)
    s = report["startup"]
    print(f"\nstart-up: ordermerge merge --help {s['ordermerge_merge_help']:.2f} s, "
          f"import torch, safetensors {s['import_torch_safetensors']:.2f} s, ratio {s['ratio']:.2f}")
    main_k = str(ks[0])
    report.update(report["by_k"][main_k])
    report["k"] = int(main_k)
    write_report(args.json or ROOT / "results/bench/merge.json", report)


def write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
