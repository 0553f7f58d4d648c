"""ordermerge audit on a small chain of records written by the library's own write_record:
source file -> prepared data -> model directory -> evaluation record."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from ordermerge.audit import build, records_for, tree
from ordermerge.audit.jobs import Job
from ordermerge.workflow.dryrun import parse_dry_run
from ordermerge.audit.verify import Hasher, check_files, check_workflow
from ordermerge.provenance import now, write_record

DATA = Path("results/data/t/train.jsonl")
MODEL = Path("results/model")
EVAL = Path("results/eval/m.json")


def _model(tag: str) -> None:
    MODEL.mkdir(parents=True, exist_ok=True)
    (MODEL / "weights.bin").write_bytes(bytes(range(256)) * 4 + tag.encode())
    (MODEL / "config.json").write_text('{"layers": 2}')
    write_record(MODEL, rule="sft", params={"lr": 0.1}, seeds={"run": 0}, inputs=[DATA],
                 start=now(), derived={"checkpoint": "epoch1"})


@pytest.fixture
def chain_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("src").mkdir()
    Path("src/raw.jsonl").write_text('{"q": 1}\n{"q": 2}\n')
    DATA.parent.mkdir(parents=True)
    DATA.write_text('{"id": "t:0", "q": 1}\n')
    write_record(DATA, rule="prepare_data", params={"n": 1}, seeds={"seed": 0},
                 inputs=["src/raw.jsonl"], start=now(),
                 derived={"source": {"repo": "x/y", "split": "train", "files": {"src/raw.jsonl": "…"}}})
    _model("a")
    EVAL.parent.mkdir(parents=True)
    EVAL.write_text('{"score": 0.5}')
    write_record(EVAL, rule="evaluate", params={"batch_size": 4}, seeds={}, inputs=[MODEL, DATA],
                 start=now())
    return tmp_path


def _problems(root, rehash=False):
    return check_files(build(root, records_for(root, EVAL)), Hasher(root, rehash, progress=False))


def test_the_chain_goes_from_an_output_to_its_source(chain_dir):
    chain = build(chain_dir, records_for(chain_dir, EVAL))
    assert set(chain.records) == {Path("results/eval/m.json.prov.json"),
                                  MODEL / "provenance.json", Path(str(DATA) + ".prov.json")}
    # inputs in the record's (sorted) order
    assert chain.children(Path("results/eval/m.json.prov.json")) == [Path(str(DATA) + ".prov.json"),
                                                                    MODEL / "provenance.json"]
    assert [str(e.file) for e in chain.sources(Path(str(DATA) + ".prov.json"))] == ["src/raw.jsonl"]
    text = tree(chain)
    lines = text.splitlines()
    assert lines[0].startswith("evaluate  results/eval/m.json  (14 B;")
    assert "sft  results/model  (2 files, 1.0 kB;" in text
    assert "derived: checkpoint=epoch1" in text and "seeds: run=0" in text
    assert "source: src/raw.jsonl sha256 " in text
    # the data are read twice (by the model and by the evaluation): printed once, then (above)
    assert sum("prepare_data  results/data/t/train.jsonl" in line for line in lines) == 2
    assert any(line.endswith("results/data/t/train.jsonl  (above)") for line in lines)
    # a directory without a record of its own stands for the records under it
    assert records_for(chain_dir, Path("results/eval")) == [Path("results/eval/m.json.prov.json")]


def test_a_clean_chain_has_no_problems(chain_dir):
    assert _problems(chain_dir) == []
    assert _problems(chain_dir, rehash=True) == []


def test_one_flipped_byte_in_a_checkpoint_is_named(chain_dir):
    f = MODEL / "weights.bin"
    data = bytearray(f.read_bytes())
    data[100] ^= 1
    f.write_bytes(bytes(data))
    [p] = _problems(chain_dir)
    assert (p.kind, p.file, p.record) == ("tampered", "results/model/weights.bin",
                                          "results/model/provenance.json")


def test_same_size_and_mtime_trust_the_record_unless_rehash(chain_dir):
    f = MODEL / "weights.bin"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[0] ^= 1
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # a rewrite that kept size and mtime
    assert _problems(chain_dir) == []
    assert [p.kind for p in _problems(chain_dir, rehash=True)] == ["tampered"]


def test_an_edited_evaluation_record_and_a_missing_source_are_named(chain_dir):
    EVAL.write_text('{"score": 0.9}')
    os.remove("src/raw.jsonl")
    got = {(p.kind, p.file) for p in _problems(chain_dir)}
    assert got == {("tampered", "results/eval/m.json"), ("missing", "src/raw.jsonl")}


def test_a_producer_rerun_makes_exactly_its_consumers_stale(chain_dir):
    _model("b")  # re-run by hand: new bytes, new record; the evaluation was not re-run
    problems = _problems(chain_dir)
    assert {(p.kind, p.file, p.record) for p in problems} == {
        ("stale", "results/model/weights.bin", "results/eval/m.json.prov.json")}
    assert "re-run the consumer" in problems[0].message


def test_a_missing_record_and_a_deleted_output_are_named(chain_dir):
    os.remove(MODEL / "config.json")
    os.remove(str(DATA) + ".prov.json")
    got = {(p.kind, p.file) for p in _problems(chain_dir)}
    assert ("missing", "results/model/config.json") in got
    assert ("missing", str(DATA)) in got


DRY_RUN = """
[Sun Nov 29 11:15:27 2026]
rule merge:
    input: scripts/merge.py, ordermerge/merge/select.py, results/sft/m/t/shuffle/run0/epoch3
    output: results/merged/m/t/shuffle/epoch3/select-s0
    log: results/logs/merge/m/t/shuffle/epoch3/select-s0.log
    jobid: 47
    reason: Forced execution
    wildcards: model=m, task=t, scheme=shuffle, epoch=3, method=select-s0
    resources: tmpdir=/tmp, runtime=30
Shell command: python scripts/merge.py --rule merge --method-id select-s0  --out-dir results/merged/m/t/shuffle/epoch3/select-s0 --params '{"weights": null, "x": "a b"}' results/sft/m/t/shuffle/run0/epoch3 > results/logs/merge/x.log 2>&1

[Sun Nov 29 11:15:28 2026]
localrule all:
    input: results/tables/table1.csv
    jobid: 0
    reason: Forced execution
    resources: tmpdir=/tmp

Job stats:
"""


def test_dry_run_jobs_are_parsed():
    merge, all_ = parse_dry_run(DRY_RUN)
    assert merge.rule == "merge"
    assert merge.inputs == ["scripts/merge.py", "ordermerge/merge/select.py",
                            "results/sft/m/t/shuffle/run0/epoch3"]
    assert merge.outputs == ["results/merged/m/t/shuffle/epoch3/select-s0"]
    assert merge.given_params == merge.params() == {"weights": None, "x": "a b"}
    assert merge.wildcards["method"] == "select-s0"
    assert (all_.rule, all_.outputs, all_.given_params, all_.params()) == ("all", [], None, {})


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t.invalid",
                    *args], check=True, capture_output=True)


def _job(rule, inputs, outputs, params):
    """A dry-run job as parse_dry_run reads it: its params in its shell command."""
    import shlex
    return Job(rule, inputs=inputs, outputs=outputs,
               command=f"python x.py --params {shlex.quote(json.dumps(params))} > log 2>&1")


def test_code_params_and_dirty_against_the_current_workflow(chain_dir):
    Path("lib.py").write_text("x = 1\n")
    _git(chain_dir, "init", "-q")
    _git(chain_dir, "add", "lib.py")
    _git(chain_dir, "commit", "-q", "-m", "lib")
    commit = subprocess.run(["git", "-C", str(chain_dir), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    chain = build(chain_dir, records_for(chain_dir, EVAL))
    for rec in chain.records.values():
        rec.data["code"] = {"commit": commit, "dirty": False}
    jobs = {str(EVAL): _job("evaluate", ["lib.py", str(MODEL)], [str(EVAL)], {"batch_size": 4}),
            str(MODEL): _job("sft", ["lib.py", str(DATA)], [str(MODEL)], {"lr": 0.1}),
            str(DATA): _job("prepare_data", [], [str(DATA)], {"n": 1})}
    assert check_workflow(chain, jobs) == []
    # the config now gives another lr; the library file changed; one record from a dirty tree
    jobs[str(MODEL)] = _job("sft", ["lib.py", str(DATA)], [str(MODEL)], {"lr": 0.2})
    Path("lib.py").write_text("x = 2\n")
    chain.records[Path(str(DATA) + ".prov.json")].data["code"]["dirty"] = True
    got = {(p.kind, p.record): p.message for p in check_workflow(chain, jobs)}
    assert set(got) == {("params", "results/model/provenance.json"),
                        ("code", "results/model/provenance.json"),
                        ("code", "results/eval/m.json.prov.json"),
                        ("dirty", "results/data/t/train.jsonl.prov.json")}
    assert "lr: recorded 0.1, config gives 0.2" in got[("params", "results/model/provenance.json")]
    assert "changed since: lib.py" in got[("code", "results/eval/m.json.prov.json")]
    # an output the current workflow does not make at all
    del jobs[str(DATA)]
    assert any(p.kind == "params" and "do not make it" in p.message
               for p in check_workflow(chain, jobs))


def test_json_output_of_the_command(chain_dir, capsys):
    from ordermerge.cli import main
    assert main(["audit", str(EVAL), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["top"] == ["results/eval/m.json.prov.json"]
    by_rule = {r["rule"]: r for r in doc["records"]}
    assert by_rule["sft"]["files"] == 2 and by_rule["sft"]["derived"] == {"checkpoint": "epoch1"}
    assert by_rule["prepare_data"]["inputs"] == [
        {"file": "src/raw.jsonl", "sha256": by_rule["prepare_data"]["inputs"][0]["sha256"],
         "producer": None}]
    assert main(["audit", "results/nothing"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_an_unreadable_record_stays_in_the_chain_of_one_cell(chain_dir):
    from ordermerge.audit import restrict
    Path(str(DATA) + ".prov.json").write_text("{not json")
    chain = build(chain_dir, records_for(chain_dir, EVAL))
    part = restrict(chain, [Path("results/eval/m.json.prov.json")])
    assert [str(r) for r, _ in part.unreadable] == [str(DATA) + ".prov.json"]
    assert ("missing", str(DATA) + ".prov.json") in {
        (p.kind, p.file) for p in check_files(part, Hasher(chain_dir, progress=False))}


def test_input_hashes_come_from_records_the_cache_or_a_read(tmp_path, monkeypatch):
    """provenance.sha256_files: a record's hash while size and mtime match; else the hash
    cache's while size, mtime and inode match (files of HASH_CACHE_MIN_BYTES and more); else
    the file is read. Every answer is the file's sha256."""
    import hashlib

    import ordermerge.provenance as prov
    monkeypatch.setenv(prov.HASH_CACHE_ENV, str(tmp_path / "cache.json"))
    monkeypatch.setattr(prov, "HASH_CACHE_MIN_BYTES", 8)
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(b"x" * 100)
    small.write_bytes(b"y")
    reads = []
    real = prov.sha256_file
    monkeypatch.setattr(prov, "sha256_file", lambda f: reads.append(f.name) or real(f))
    want = [hashlib.sha256(f.read_bytes()).hexdigest() for f in (big, small)]
    assert prov.sha256_files([big, small]) == want and sorted(reads) == ["big.bin", "small.bin"]
    reads.clear()
    assert prov.sha256_files([big, small]) == want and reads == ["small.bin"]  # big: cached
    st = small.stat()
    entry = {"sha256": "recorded", "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    reads.clear()
    assert prov.sha256_files([big, small], [None, entry]) == [want[0], "recorded"] and reads == []
    big.write_bytes(b"z" * 100)  # rewritten: another mtime
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    reads.clear()
    assert prov.sha256_files([big]) == [hashlib.sha256(b"z" * 100).hexdigest()] and reads == ["big.bin"]
    monkeypatch.setenv(prov.HASH_CACHE_ENV, "")  # off
    reads.clear()
    assert prov.sha256_files([big]) == [hashlib.sha256(b"z" * 100).hexdigest()] and reads == ["big.bin"]
