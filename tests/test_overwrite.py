"""Nothing a user types destroys data (issue 24): `ordermerge merge --overwrite` replaces only
a previous merge output and only once the new one is whole; every merged model has its
config; NaN/Inf, a sub-model given twice, settings out of range and shard indexes that point
elsewhere are refused with one line naming them; killed writers' temporary directories go."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ordermerge import utils
from ordermerge.cli import main as cli
from ordermerge.merge.engine import MergeError, merge
from ordermerge.utils import OutputError, atomic_dir, check_output_dir
from test_engine import tensors, write_ckpt


@pytest.fixture
def subs(tmp_path):
    base_t = tensors(100)
    return [write_ckpt(tmp_path / "nest" / f"s{i}", tensors(i, base=base_t)) for i in range(2)]


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def run(argv, cwd=None):
    """`ordermerge ...` in a subprocess (a real exit status and stderr, any working dir)."""
    return subprocess.run([sys.executable, "-m", "ordermerge.cli", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- data loss (the four cases)

def test_an_empty_output_path_is_refused_and_the_directory_kept(subs, tmp_path):
    """Case 1: `cd DIR; ordermerge merge ... --overwrite -o "" SUB1 SUB2` (an unset variable)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    before = tree(work)
    for out in ("", ".", "./", str(work), str(tmp_path)):
        proc = run(["merge", "--method", "average", "--overwrite", "-o", out, *map(str, subs)],
                   cwd=work)
        assert proc.returncode == 1, (out, proc.stderr)
        line = proc.stderr.strip()
        assert line.startswith("ordermerge merge: ") and "\n" not in line, line
        assert ("is empty" in line) if out == "" else ("current directory" in line), line
    assert tree(work) == before


@pytest.mark.parametrize("where", ["parent", "input", "inside-input-parent"])
def test_an_output_that_is_or_holds_an_input_is_refused(subs, tmp_path, where):
    """Case 2: `-o nest nest/s0 nest/s1` deleted the inputs and every other file of nest/;
    `-o` equal to an input replaced it and lost its provenance.json."""
    nest = tmp_path / "nest"
    (nest / "other.txt").write_text("keep me")
    (subs[0] / "provenance.json").write_text("{}")
    out = {"parent": nest, "input": subs[0], "inside-input-parent": tmp_path}[where]
    before = tree(tmp_path)
    proc = run(["merge", "--method", "average", "--overwrite", "-o", str(out), *map(str, subs)],
                cwd=subs[1])
    assert proc.returncode == 1 and "\n" not in proc.stderr.strip()
    assert ("is the input" if where == "input" else "holds") in proc.stderr or \
        "current directory" in proc.stderr, proc.stderr
    assert tree(tmp_path) == before


def test_a_directory_that_is_not_a_merge_output_is_refused(subs, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (tmp_path / "afile").write_text("a file")
    with pytest.raises(MergeError, match=r"'.*mine' exists and is not a previous output \(it has no merge.json\)"):
        merge("average", subs, mine, overwrite=True)
    with pytest.raises(MergeError, match="exists and is not a directory"):
        merge("average", subs, tmp_path / "afile", overwrite=True)
    (mine / "merge.json").write_text("not json")
    with pytest.raises(MergeError, match="merge.json is unreadable"):
        merge("average", subs, mine, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert (tmp_path / "afile").read_text() == "a file"


def test_overwrite_replaces_a_previous_merge_only_once_the_new_one_is_whole(subs, tmp_path,
                                                                           monkeypatch, capsys):
    """Case 3: the old output was deleted first; a delete failing part-way left it without
    weights and threw the new merge away. Now: old aside, new in place, old removed last."""
    out = tmp_path / "merged"
    merge("average", subs, out)
    old = tree(out)
    # a failure while the new merge is built: the old output is untouched
    import ordermerge.merge.engine as engine
    real_finish = engine._finish

    def failing_finish(*a, **k):
        raise OSError(28, "No space left on device", str(out) + ".tmp")
    monkeypatch.setattr(engine, "_finish", failing_finish)
    with pytest.raises(OSError):
        merge("average", subs, out, overwrite=True, weights=[0.25, 0.75])
    assert tree(out) == old
    monkeypatch.setattr(engine, "_finish", real_finish)
    # removing the old output fails part-way (one file will not go): the new one is in
    # place and whole, the rest of the old one is named and left beside it
    real_unlink = os.unlink

    def stubborn_unlink(path, *a, **k):
        # shutil.rmtree unlinks by name relative to an open directory (dir_fd)
        if Path(path).name == "model.safetensors" and (".merged.old-" in str(path)
                                                       or k.get("dir_fd") is not None):
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_unlink(path, *a, **k)
    monkeypatch.setattr(os, "unlink", stubborn_unlink)
    merge("average", subs, out, overwrite=True, weights=[0.25, 0.75])
    monkeypatch.setattr(os, "unlink", real_unlink)
    new = tree(out)
    assert new != old and json.loads(new["merge.json"])["weights"] == [0.25, 0.75]
    assert {"model.safetensors", "config.json", "merge.json", "README.md"} <= set(new)
    err = capsys.readouterr().err
    assert f"{out} was replaced" in err and "remove them by hand" in err
    leftover = [p for p in tmp_path.iterdir() if p.name.startswith(".merged.old-")]
    assert len(leftover) == 1 and (leftover[0] / "model.safetensors").read_bytes() == old["model.safetensors"]


def test_a_merge_takes_its_config_from_any_input_and_fails_without_one(subs, tmp_path):
    """Case 4: the first sub-model without config.json gave a model from_pretrained could
    not load, with exit status 0."""
    (subs[0] / "config.json").unlink()
    merge("average", subs, tmp_path / "ok")
    assert (tmp_path / "ok/config.json").read_bytes() == (subs[1] / "config.json").read_bytes()
    (subs[1] / "config.json").unlink()
    proc = run(["merge", "--method", "average", "-o", str(tmp_path / "none"), *map(str, subs)])
    assert proc.returncode == 1 and not (tmp_path / "none").exists()
    assert proc.stderr.strip() == (f"ordermerge merge: no config.json in any input ({subs[0]}, "
                                   f"{subs[1]}): the merged model could not be loaded")


# ---------------------------------------------------------------- accepted in silence before

def test_nan_or_inf_in_an_input_is_named_unless_allowed(subs, tmp_path):
    from safetensors.torch import load_file, save_file
    ts = load_file(str(subs[1] / "model.safetensors"))
    ts["layers.0.w"] = ts["layers.0.w"].clone()
    ts["layers.0.w"].view(-1)[37] = float("nan")
    save_file(ts, str(subs[1] / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MergeError, match=r"tensor 'layers.0.w' in .*s1/model.safetensors holds "
                                         r"NaN or Inf \(first at flat index 37\)"):
        merge("average", subs, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    recipe = merge("average", subs, tmp_path / "y", allow_nonfinite=True)
    assert recipe["allow_nonfinite"] is True
    assert json.loads((tmp_path / "y/merge.json").read_text())["allow_nonfinite"] is True
    ts["layers.0.w"].view(-1)[37] = float("-inf")
    save_file(ts, str(subs[1] / "model.safetensors"), metadata={"format": "pt"})
    proc = run(["merge", "--method", "select", "-o", str(tmp_path / "z"), *map(str, subs)])
    assert proc.returncode == 1 and "holds NaN or Inf" in proc.stderr
    # a clean merge records that nothing was allowed
    assert json.loads((tmp_path / "y/merge.json").read_text())["allow_nonfinite"] is True


def test_a_huge_finite_chunk_is_not_mistaken_for_inf(tmp_path):
    big = {"w": torch.full((64,), 3.0e38, dtype=torch.float32)}
    subs = [write_ckpt(tmp_path / f"b{i}", big) for i in range(2)]
    merge("select", subs, tmp_path / "out")  # the inputs' min/max are finite
    # their float32 sum is not: the average names the merged element (tests/test_engine.py)
    with pytest.raises(MergeError, match="from finite inputs"):
        merge("average", subs, tmp_path / "avg")


def test_the_same_sub_model_twice_is_refused(subs, tmp_path):
    s0 = subs[0]
    twice = [str(s0), f"{s0}/", str(s0.parent / "." / s0.name)]
    proc = run(["merge", "--method", "average", "-o", str(tmp_path / "x"), *twice, str(subs[1])])
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"ordermerge merge: sub-model '{s0}/' is '{s0}' again: each "
                                   "sub-model counts once (give its weight instead)")


@pytest.mark.parametrize("argv, message", [
    (["--method", "ties", "--density", "2"], "setting 'density': '2' is outside (0, 1]"),
    (["--method", "ties", "--density", "0"], "setting 'density': '0' is outside (0, 1]"),
    (["--method", "dare_linear", "--drop", "1"], "setting 'drop': '1' is outside [0, 1)"),
    (["--method", "ties-d1.5-l1.0"], "is outside (0, 1]"),
])
def test_settings_outside_their_range_are_refused(subs, tmp_path, argv, message):
    proc = run(["merge", *argv, "--base", str(subs[0]), "-o", str(tmp_path / "x"), *map(str, subs)])
    assert proc.returncode in (1, 2) and message in proc.stderr and not (tmp_path / "x").exists()
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--memory-budget", "0"], "argument --memory-budget: '0' is below the floor of 64KiB"),
    (["--threads", "-1"], "argument --threads: '-1' is not an integer >= 1"),
    (["--weights", "0.5", "0.3"], "(--weights and --probs take one comma-separated value"),
    (["--weights", "0.5,fast"], "'fast' in '0.5,fast' is not a number"),
])
def test_cli_arguments_out_of_range_are_named(subs, tmp_path, argv, message):
    proc = run(["merge", "--method", "average", *argv, "-o", str(tmp_path / "x"), *map(str, subs)])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("ordermerge merge: error: ")


def test_weights_are_one_value_so_paths_and_negative_infinity_stay_what_they_are(subs, tmp_path):
    """`--weights inf -inf` was "unrecognized arguments"; `--weights 0.5 0.3 0.8 S1 S2 S3`
    after -o swallowed the model paths."""
    proc = run(["merge", "--method", "task_arithmetic", "--base", str(subs[0]),
                "--weights", "inf,-inf", "-o", str(tmp_path / "x"), *map(str, subs)])
    assert proc.returncode == 1 and "weights: must be finite, got [inf, -inf]" in proc.stderr
    proc = run(["merge", "--method", "average", "-o", str(tmp_path / "y"), "--weights",
                "0.5", "0.3", *map(str, subs)])
    assert proc.returncode == 2 and proc.stderr == (
        "ordermerge merge: sub-model '0.3' is a number, not a directory: --weights and --probs "
        "take one comma-separated value (e.g. --weights 0.5,0.3,0.2)\n")
    proc = run(["merge", "--method", "average", "-o", str(tmp_path / "y"), "--weights",
                "0.25,0.75", *map(str, subs)])
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "y/merge.json").read_text())["weights"] == [0.25, 0.75]


def test_a_weight_list_that_starts_with_a_minus_is_a_value_not_an_option(subs, tmp_path):
    """`--weights -1,2` failed in argparse ("expected one argument"); only `--weights=-1,2`
    worked. Now both spellings reach the method's own check, and a task-vector merge takes
    them as given."""
    for spelling in (["--weights", "-1,2"], ["--weights=-1,2"]):
        proc = run(["merge", "--method", "average", *spelling, "-o", str(tmp_path / "x"),
                    *map(str, subs)])
        assert proc.returncode == 1 and proc.stderr == (
            "ordermerge merge: weights: must be non-negative and sum to 1 (within 1e-6), got "
            "[-1.0, 2.0]\n"), proc.stderr
    assert not (tmp_path / "x").exists()
    proc = run(["merge", "--method", "task_arithmetic", "--base", str(subs[0]), "--weights",
                "-0.5,1.5", "-o", str(tmp_path / "y"), *map(str, subs)])
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "y/merge.json").read_text())["weights"] == [-0.5, 1.5]
    # a setting's value in exponent form reaches the setting's own check too
    proc = run(["merge", "--method", "task_arithmetic", "--base", str(subs[0]), "--lambda",
                "-1e0", "-o", str(tmp_path / "z"), *map(str, subs)])
    assert proc.returncode == 1 and proc.stderr == (
        "ordermerge merge: setting 'lambda': '-1e0' is not a finite number >= 0\n"), proc.stderr


def test_a_shard_index_pointing_outside_its_checkpoint_is_refused(subs, tmp_path):
    s = subs[0]
    (s / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"layers.0.w": "../s1/model.safetensors"}}))
    proc = run(["merge", "--method", "average", "-o", str(tmp_path / "x"), *map(str, subs)])
    assert proc.returncode == 1 and "names shard '../s1/model.safetensors', outside" in proc.stderr


def test_an_unwritable_output_is_named_in_one_line(subs, tmp_path, monkeypatch, capsys):
    """A full or read-only disk: one line naming the file, nothing at OUT (in-process)."""
    import ordermerge.merge.st_io as st_io

    def full(self, name, t):
        raise OSError(28, "No space left on device", "/data/out.tmp/model.safetensors")
    monkeypatch.setattr(st_io.ShardedWriter, "write", full)
    assert cli(["merge", "--method", "average", "-o", str(tmp_path / "x"), *map(str, subs)]) == 1
    assert capsys.readouterr().err == \
        "ordermerge merge: /data/out.tmp/model.safetensors: No space left on device\n"
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- temporary directories

def merge_killed_by(sig: str, out: Path, subs) -> subprocess.CompletedProcess:
    """`ordermerge merge` (the command line, its handlers installed) sending itself `sig`
    right after it wrote its first chunk."""
    code = ("import os, signal, sys\n"
            "import ordermerge.merge.st_io as st_io\n"
            "real = st_io.ShardedWriter.write\n"
            "def write(self, name, t):\n"
            "    real(self, name, t)\n"
            f"    os.kill(os.getpid(), signal.{sig})\n"
            "st_io.ShardedWriter.write = write\n"
            "from ordermerge.cli import main\n"
            f"sys.argv = ['ordermerge', 'merge', '--method', 'average', '-o', {str(out)!r}, "
            f"*{list(map(str, subs))!r}]\n"
            "sys.exit(main())\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_killed_writers_temporary_directories_go_on_the_next_write(tmp_path):
    """SIGKILL mid-write left `.OUT.tmp-*` with a partial shard that nothing removed: the
    next write of the same output removes those of dead processes of this host, and keeps
    a live writer's, another host's and anything else."""
    final = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = utils.socket.gethostname()
    stale = [tmp_path / f".out.tmp-{host}-{dead.pid}-abc12345",
             tmp_path / f".out.old-{host}-{dead.pid}-def67890"]
    kept = [tmp_path / f".out.tmp-{host}-{os.getpid()}-live0000",
            tmp_path / f".out.tmp-otherhost-{dead.pid}-far00000",
            tmp_path / ".out.tmp-legacy", tmp_path / ".other.tmp-x-1-y", tmp_path / "data"]
    for p in stale + kept:
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"partial")
    with atomic_dir(final) as tmp:
        (tmp / "a").write_text("new")
    assert [p.exists() for p in stale] == [False, False]
    assert all(p.exists() for p in kept) and (final / "a").read_text() == "new"


def test_a_killed_writers_temporary_file_goes_on_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".r.json.tmp-{utils.socket.gethostname()}-{dead.pid}-x1y2z3"
    stale.write_text('{"partial": ')
    utils.write_json(tmp_path / "r.json", {"a": 1})
    assert not stale.exists() and json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_killed_merge_leaves_a_temporary_directory_the_next_merge_removes(subs, tmp_path):
    out = tmp_path / "m"
    proc = merge_killed_by("SIGKILL", out, subs)
    assert proc.returncode == -9
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".m.tmp-")]
    assert len(left) == 1 and not out.exists()
    assert cli(["merge", "--method", "average", "-o", str(out), *map(str, subs)]) == 0
    assert not left[0].exists() and (out / "model.safetensors").is_file()


def test_a_terminated_merge_leaves_nothing(subs, tmp_path):
    """SIGTERM (scancel, a cancelled Snakemake job) mid-write: the command's handler turns it
    into an exit that removes the temporary directory."""
    proc = merge_killed_by("SIGTERM", tmp_path / "m", subs)
    assert proc.returncode == 143, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nest"]


def test_a_full_disk_names_the_shard(subs, tmp_path, monkeypatch, capsys):
    """write() of a full disk names no file: the writer adds the shard's path."""
    import builtins
    real_open = builtins.open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            if len(data) > 64:
                raise OSError(28, "No space left on device")
            return self.fh.write(data)

        def close(self):
            self.fh.close()

    def fake_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return Full(fh) if str(path).endswith("model.safetensors") and "w" in mode else fh
    import ordermerge.merge.st_io as st_io
    monkeypatch.setattr(st_io, "open", fake_open, raising=False)
    assert cli(["merge", "--method", "average", "-o", str(tmp_path / "x"), *map(str, subs)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ordermerge merge: ") and err.rstrip().endswith(
        "model.safetensors: No space left on device") and ".x.tmp-" in err, err
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.tmp-*"))


def test_check_output_dir_accepts_a_new_path_and_a_judged_previous_output(tmp_path):
    assert check_output_dir(tmp_path / "new", inputs=[tmp_path / "in"]) == tmp_path / "new"
    prev = tmp_path / "prev"
    prev.mkdir()
    assert check_output_dir(prev, previous=lambda p: None) == prev
    with pytest.raises(OutputError, match=r"not a previous output \(no record\)"):
        check_output_dir(prev, previous=lambda p: "no record")
    with pytest.raises(OutputError, match="file system root or the home directory"):
        check_output_dir(Path.home())


def test_the_merge_help_says_what_overwrite_replaces():
    proc = run(["merge", "--help"])
    text = " ".join(proc.stdout.split())
    assert "replace OUT if it is a previous merge output" in text
    assert "never an input" in text and "comma-separated" in text
    assert shutil.which(sys.executable)


def test_gguf_conversion_replaces_only_an_earlier_conversion(tmp_path, capsys):
    """`ordermerge gguf --out` replaced any directory before; now only with --overwrite, and
    only one with its gguf.json (checked before the GGUF file is read)."""
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    out = tmp_path / "models"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    assert cli(["gguf", "--file", str(gguf), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"ordermerge gguf: --out {out} already exists "
                                       "(--overwrite replaces an earlier conversion)\n")
    assert cli(["gguf", "--file", str(gguf), "--out", str(out), "--overwrite"]) == 1
    assert capsys.readouterr().err == (f"ordermerge gguf: --out {str(out)!r} exists and is not "
                                       "a previous output (it has no gguf.json): refusing to "
                                       "replace it\n")
    assert cli(["gguf", "--file", str(gguf), "--out", str(tmp_path)]) == 1
    assert "holds the input" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "mine"
