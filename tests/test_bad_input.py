"""Bad input to `ordermerge train`, to the local-dataset reader and to `ordermerge audit`
(issue 24): one line naming the setting, file, line or record, and a non-zero exit."""
import json
import os
from pathlib import Path

import pytest

from ordermerge.cli import main
from ordermerge.data.prepare import prepare
from ordermerge.data.registry import DatasetUnavailable


@pytest.fixture
def run_dir(tmp_path):
    """What `ordermerge train` checks before it loads a model: a data directory and an order."""
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation"):
        (data / f"{split}.jsonl").write_text('{"id": "gsm8k:train:000000", "question": "q", '
                                             '"answer": "a\\n#### 1"}\n')
    order = tmp_path / "order.json"
    order.write_text(json.dumps({"seed": 0, "run": 0, "epochs": [["gsm8k:train:000000"]]}))
    return tmp_path, data, order


def train(run_dir, *extra, task="gsm8k", order=None):
    root, data, default_order = run_dir
    return main(["train", "--task", task, "--base", str(root / "no-model"), "--data-dir",
                 str(data), "--order", str(order or default_order), "--out-dir",
                 str(root / "out"), *extra])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("params, message", [
    ({"lr": "fast"}, "ordermerge train: train parameter lr: 'fast' is not of type 'number'"),
    ({"batch_size": 0}, "ordermerge train: train parameter batch_size: 0 is less than the minimum of 1"),
    ({"speed": 3}, "ordermerge train: train parameter 'speed' is unknown"),
])
def test_a_bad_train_setting_is_named(run_dir, capsys, params, message):
    assert train(run_dir, "--params", json.dumps(params)) == 1
    assert one_line(capsys).startswith(message)
    assert not (run_dir[0] / "out").exists()


def test_params_that_are_not_json_or_not_an_object(run_dir, capsys):
    with pytest.raises(SystemExit) as e:
        train(run_dir, "--params", "{lr: 1")
    assert e.value.code == 2
    assert "argument --params: not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(run_dir, "--params", "[1, 2]")
    assert "argument --params: '[1, 2]' is not a JSON object" in capsys.readouterr().err


def test_a_params_file_that_is_missing_or_not_yaml_is_named(run_dir, capsys):
    root = run_dir[0]
    assert train(run_dir, "--params-file", str(root / "nope.yaml")) == 1
    assert one_line(capsys) == (f"ordermerge train: --params-file {root / 'nope.yaml'}: "
                                "No such file or directory")
    bad = root / "bad.yaml"
    bad.write_text("lr: 1.0e-3\nbatch_size: [8\n")
    assert train(run_dir, "--params-file", str(bad)) == 1
    err = one_line(capsys)
    assert err.startswith(f"ordermerge train: --params-file {bad}:3:1: not valid YAML"), err
    bad.write_text("- 1\n- 2\n")
    assert train(run_dir, "--params-file", str(bad)) == 1
    assert "train settings must be a mapping of keys to values, got list" in one_line(capsys)


def test_an_unknown_task_is_named_with_the_known_ones(run_dir, capsys):
    assert train(run_dir, task="gsm9k") == 1
    err = one_line(capsys)
    assert err.startswith("ordermerge train: unknown task 'gsm9k'; registered tasks: [") and "'gsm8k'" in err


def test_a_missing_order_is_not_called_a_bad_order(run_dir, capsys):
    missing = run_dir[0] / "orders/run0.json"
    assert train(run_dir, order=missing) == 1
    assert one_line(capsys) == f"ordermerge train: order file {missing}: no such file"


@pytest.mark.parametrize("epochs, what", [([], "no epochs"), ([[]], "epoch 1 has no rows"),
                                          ([["gsm8k:train:000000"], []], "epoch 2 has no rows")])
def test_an_empty_order_trains_nothing_and_says_so(run_dir, capsys, epochs, what):
    """It reported "done: 0 steps" and wrote run.json and samples.csv, but no checkpoint."""
    order = run_dir[0] / "empty.json"
    order.write_text(json.dumps({"epochs": epochs}))
    assert train(run_dir, order=order) == 1
    assert one_line(capsys) == (f"ordermerge train: order file {order}: {what}: there is "
                                "nothing to train on")
    assert not (run_dir[0] / "out").exists()


def test_a_directory_in_the_way_of_a_checkpoint_is_not_replaced(run_dir, capsys):
    mine = run_dir[0] / "out/epoch1"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    assert train(run_dir) == 1
    assert one_line(capsys) == (f"ordermerge train: {mine} exists and is not a checkpoint of a "
                                "run (it has no provenance.json): refusing to replace it")
    assert (mine / "notes.txt").read_text() == "mine"


def _tree(d: Path) -> dict:
    """Every file under d, by relative path, with its bytes."""
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("where", ["", ".", "cwd", "parent"])
def test_train_refuses_an_empty_path_and_the_current_directory(run_dir, capsys, monkeypatch, where):
    """`--out-dir ""` or `.` trained into the current directory and overwrote the run.json and
    samples.csv there (exit 0)."""
    root = run_dir[0]
    work = root / "work"
    work.mkdir()
    (work / "run.json").write_text('{"mine": 1}')
    (work / "samples.csv").write_text("mine\n")
    monkeypatch.chdir(work)
    out = {"": "", ".": ".", "cwd": str(work), "parent": str(root)}[where]
    before = _tree(root)
    assert main(["train", "--task", "gsm8k", "--base", str(root / "no-model"), "--data-dir",
                 str(run_dir[1]), "--order", str(run_dir[2]), "--out-dir", out]) == 1
    err = one_line(capsys)
    assert err == ("ordermerge train: the --out-dir path is empty (an unset shell variable?)"
                   if where == "" else
                   f"ordermerge train: --out-dir {out!r} is the current directory or holds it"), err
    assert _tree(root) == before


@pytest.mark.parametrize("name", ["run.json", "samples.csv", "steps.jsonl", "notes.txt",
                                  "run.json.prov.json"])
def test_train_refuses_a_directory_with_files_it_did_not_write(run_dir, capsys, name):
    """The user's own run.json, samples.csv or steps.jsonl (no run's provenance record beside
    them), or any other file, in --out-dir: refused before anything is written."""
    out = run_dir[0] / "out"
    out.mkdir()
    (out / name).write_text('{"mine": 1}')
    before = _tree(out)
    assert train(run_dir) == 1
    err = one_line(capsys)
    why = {"notes.txt": "it holds 'notes.txt', which a run does not write",
           "run.json.prov.json": "it holds run.json.prov.json, not a run's record (its "
                                 "run.json.prov.json has no rule)"}.get(
        name, f"it holds {name}, not a run's (it has no {name}.prov.json)")
    assert err == (f"ordermerge train: --out-dir {str(out)!r} exists and is not an earlier "
                   f"run's output ({why}): refusing to train into it"), err
    assert _tree(out) == before


def test_train_refuses_an_out_dir_that_holds_its_inputs(run_dir, capsys):
    root, data, _ = run_dir
    before = _tree(root)
    assert main(["train", "--task", "gsm8k", "--base", str(root / "no-model"), "--data-dir",
                 str(data), "--order", str(run_dir[2]), "--out-dir", str(data)]) == 1
    assert one_line(capsys) == f"ordermerge train: --out-dir {str(data)!r} is the input {str(data)!r}"
    assert _tree(root) == before


def test_train_goes_on_in_an_earlier_runs_directory(run_dir, capsys):
    """What a run writes (its logs with their records, checkpoints, resume state, a killed
    write's temporary file) passes the check: the run then stops at the missing base model,
    not at its output directory, and nothing there has changed."""
    out = run_dir[0] / "out"
    for d in ("epoch1", "steps/step00000002", "resume/state-00000002"):
        (out / d).mkdir(parents=True)
    for d in ("epoch1", "steps/step00000002"):
        (out / d / "provenance.json").write_text('{"rule": "ordermerge train"}')
    for name in ("run.json", "samples.csv", "steps.jsonl"):
        (out / name).write_text("earlier")
        (out / f"{name}.prov.json").write_text('{"rule": "ordermerge train"}')
    (out / ".run.json.tmp-host-1-x").write_text("killed")
    before = _tree(out)
    assert train(run_dir) == 1
    err = one_line(capsys)
    assert "--out-dir" not in err and "no-model" in err, err
    assert _tree(out) == before


def test_rows_of_another_task_or_missing_a_field_are_named_before_training(run_dir, capsys):
    """`--task sst2` on GSM8K rows ended in KeyError: 'query' inside the run, and so did a row
    missing a field: now one line naming the file, the row and the field."""
    root, data, _ = run_dir
    order = root / "sst2-order.json"
    order.write_text(json.dumps({"seed": 0, "run": 0, "epochs": [["gsm8k:train:000000"]]}))
    assert train(run_dir, task="sst2", order=order) == 1
    err = one_line(capsys)
    assert err.startswith(f"ordermerge train: {data / 'train.jsonl'}: row 0 lacks field(s) ") \
        and "required by task 'sst2'" in err, err
    (data / "validation.jsonl").write_text('{"id": "gsm8k:train:000001", "answer": "a\\n#### 1"}\n')
    assert train(run_dir) == 1
    assert one_line(capsys) == (f"ordermerge train: {data / 'validation.jsonl'}: row 0 lacks "
                                "field(s) ['question'] required by task 'gsm8k' (has ['answer', "
                                "'id'])")
    assert not (root / "out").exists()


@pytest.mark.parametrize("split, text, message", [
    ("validation", "", "{validation}: no rows: the validation loss needs at least one"),
    ("train", '{"id": "gsm8k:train:000000", "question": null, "answer": "a\\n#### 1"}\n',
     "{train}: row 0 has null field(s) ['question'] required by task 'gsm8k'"),
    ("train", 2 * '{"id": "gsm8k:train:000000", "question": "q", "answer": "a\\n#### 1"}\n',
     "{train}: row id 'gsm8k:train:000000' appears twice"),
])
def test_data_that_would_train_or_score_silently_wrong_is_refused(run_dir, capsys, split, text,
                                                                  message):
    """An empty validation file gave validation_loss 0.0; "question": null became the prompt
    "Question: None"; a repeated id dropped one of the rows. Each is one line, nothing written."""
    root, data, _ = run_dir
    (data / f"{split}.jsonl").write_text(text)
    assert train(run_dir) == 1
    assert one_line(capsys) == "ordermerge train: " + message.format(
        train=data / "train.jsonl", validation=data / "validation.jsonl")
    assert not (root / "out").exists()


@pytest.mark.parametrize("order, message", [
    ({"seed": "x", "run": 0, "epochs": [["gsm8k:train:000000"]]}, "'seed' is 'x', not an integer"),
    ({"seed": 0, "run": 1.5, "epochs": [["gsm8k:train:000000"]]}, "'run' is 1.5, not an integer"),
    ({"seed": 0, "run": 0, "epochs": [["gsm8k:train:000000"], ["gsm8k:train:000000"] * 2]},
     "epoch 2 names row 'gsm8k:train:000000' twice"),
    ({"seed": 0, "run": 0, "epochs": [[["gsm8k:train:000000"]]]}, "not an order file"),
])
def test_an_order_with_a_bad_seed_or_a_row_twice_is_refused(run_dir, capsys, order, message):
    root, _, path = run_dir
    path.write_text(json.dumps(order))
    assert train(run_dir) == 1
    assert one_line(capsys).startswith(f"ordermerge train: order file {path}: {message}")
    assert not (root / "out").exists()


def test_threads_below_one_are_refused(run_dir, capsys):
    with pytest.raises(SystemExit):
        train(run_dir, "--threads", "0")
    assert "argument --threads: '0' is not an integer >= 1" in capsys.readouterr().err


# ---------------------------------------------------------------- local datasets

def _gsm8k_dir(tmp_path: Path, train: bytes, test: list[dict] | None = None) -> Path:
    d = tmp_path / "gsm8k"
    d.mkdir()
    (d / "train.jsonl").write_bytes(train)
    test = test or [{"question": "t?", "answer": "x\n#### 3"}]
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return d


def _rows(n: int) -> bytes:
    return "".join(json.dumps({"question": f"q{i}?", "answer": f"a {i}\n#### {i}"}) + "\n"
                   for i in range(n)).encode()


def _prepare(path: Path, n_validation: int = 2, origin=None):
    cfg = {"source": "hf", "path": str(path), "n_validation": n_validation, "n_train": None,
           "n_test": None, "revision": None, "test_path": None}
    return prepare("gsm8k", cfg, 0, "tasks.gsm8k.data", origin=origin)


def test_a_malformed_json_line_is_named_by_file_and_line(tmp_path):
    d = _gsm8k_dir(tmp_path, _rows(3) + b'{"question": \n' + _rows(1))
    with pytest.raises(DatasetUnavailable, match=r"^.*gsm8k/train.jsonl:4: not valid JSON "
                                                 r"\(Expecting value at column 14\)$"):
        _prepare(d)


def test_bytes_that_are_not_utf8_are_named_by_file_line_and_column(tmp_path):
    d = _gsm8k_dir(tmp_path, _rows(2) + b'{"question": "\xff", "answer": "#### 1"}\n')
    with pytest.raises(DatasetUnavailable, match=r"train.jsonl:3: not UTF-8 \(byte 0xff at column 15\)"):
        _prepare(d)


def test_an_empty_train_file_is_named_not_n_validation(tmp_path):
    d = _gsm8k_dir(tmp_path, b"")
    with pytest.raises(DatasetUnavailable) as e:
        _prepare(d)
    assert str(e.value) == (f"tasks.gsm8k.data.path = '{d}': split 'train' has no rows "
                            f"({d / 'train.jsonl'} is empty)")


def test_a_gsm8k_answer_without_its_final_line_is_named(tmp_path):
    d = _gsm8k_dir(tmp_path, _rows(6), test=[{"question": "t?", "answer": "no final line"}])
    with pytest.raises(ValueError) as e:
        _prepare(d)
    assert str(e.value) == ("gsm8k source split 'test': row 0 cannot be read by task 'gsm8k': "
                            "answer has no '#### <number>' final line: 'no final line'")


def test_repeated_rows_do_not_put_validation_rows_into_train(tmp_path):
    d = _gsm8k_dir(tmp_path, _rows(6) * 3)  # every row three times
    origin: dict = {}
    out = _prepare(d, origin=origin)
    val = {r["question"] for r in out["validation"]}
    assert len(val) == 2 and not val & {r["question"] for r in out["train"]}
    assert len(out["train"]) == 18 - 2 - 4  # two sampled, their four copies left out
    assert origin["train"]["train_rows_repeating_validation_left_out"] == 4
    # ids still name the source rows
    assert all(r["id"].startswith("gsm8k:train:") for r in out["train"])


# ---------------------------------------------------------------- audit without --verify

@pytest.fixture
def chain(tmp_path, monkeypatch):
    from ordermerge.provenance import now, write_record
    monkeypatch.chdir(tmp_path)
    data = Path("results/data/t/train.jsonl")
    data.parent.mkdir(parents=True)
    data.write_text('{"id": "t:0"}\n')
    write_record(data, rule="prepare_data", params={}, seeds={}, inputs=[], start=now())
    ev = Path("results/eval/m.json")
    ev.parent.mkdir(parents=True)
    ev.write_text('{"score": 1}')
    write_record(ev, rule="evaluate", params={}, seeds={}, inputs=[data], start=now())
    return data, ev


def test_audit_without_verify_fails_on_an_unreadable_record(chain, capsys):
    data, ev = chain
    assert main(["audit", str(ev)]) == 0
    capsys.readouterr()
    Path(str(data) + ".prov.json").write_text("{not json")
    assert main(["audit", str(ev)]) == 1
    out, err = capsys.readouterr()
    assert "(unreadable record: not a readable provenance record" in out
    assert "the chain below it is cut off" in out
    assert err.startswith("ordermerge audit: the chain is incomplete (1): ") and \
        f"{data}.prov.json: not a readable provenance record" in err


def test_audit_without_verify_shows_a_deleted_file_as_deleted(chain, capsys):
    data, ev = chain
    os.unlink(data)
    assert main(["audit", str(ev)]) == 1
    out, err = capsys.readouterr()
    line = next(x for x in out.splitlines() if "prepare_data" in x)
    assert f"(DELETED: {data}; recorded 14 B;" in line, line
    assert err.strip() == (f"ordermerge audit: the chain is incomplete (1): {data}: deleted "
                           f"(recorded by {data}.prov.json)")


@pytest.mark.parametrize("edit, why", [
    (b"\xff\xfe{}", "('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)"),
    ({"outputs": None}, "('outputs' is null, not an object of files)"),
    ({"inputs": 5}, "('inputs' is 5, not an object of files)"),
    ({"inputs": {"a.jsonl": 5}}, "('inputs': 'a.jsonl' maps to 5, not a sha256 string)"),
    ({"rule": ["prepare_data"]}, "('rule' is list, not a string)"),
])
def test_audit_names_a_record_it_cannot_follow(chain, capsys, edit, why):
    """A non-UTF-8 record, "outputs": null and "inputs": 5 were tracebacks (the first with
    --verify too): each is an unreadable record, one line, exit 1."""
    data, ev = chain
    rec = Path(str(data) + ".prov.json")
    if isinstance(edit, bytes):
        rec.write_bytes(edit)
    else:
        rec.write_text(json.dumps({**json.loads(rec.read_text()), **edit}))
    for verify in ([], ["--verify"]):
        assert main(["audit", str(ev), *verify]) == 1
        out, err = capsys.readouterr()
        assert f"{rec}  (unreadable record: not a readable provenance record {why}; the chain " \
            "below it is cut off)" in out, out
        assert "Traceback" not in err


def test_audit_without_verify_names_an_input_whose_record_is_gone(chain, capsys):
    """A deleted (or never written) record of a workflow output ended the chain at a
    `source:` line with exit 0: it is marked, and the chain is incomplete."""
    data, ev = chain
    os.unlink(str(data) + ".prov.json")
    assert main(["audit", str(ev)]) == 1
    out, err = capsys.readouterr()
    line = next(x for x in out.splitlines() if "source:" in x)
    assert line.endswith(f"source: {data} sha256 {_sha(data)[:16]}  (NO RECORD: a workflow "
                         "output without its producer's record; the chain is cut off here)"), line
    assert err.strip() == (f"ordermerge audit: the chain is incomplete (1): {data}: no "
                           f"provenance record of its producer (read by {ev}.prov.json)")


def _sha(path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_a_script_prints_a_library_input_error_as_one_line(tmp_path):
    """Library functions raise InputError (no SystemExit inside the package); the workflow's
    scripts print its message alone and exit 1, as before."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    test = tmp_path / "test.jsonl"
    test.write_text('{"id": "gsm8k:test:000000", "question": "q", "answer": "#### 1"}\n')
    proc = subprocess.run([sys.executable, str(root / "scripts/evaluate.py"), "--task", "gsm8k",
                           "--task", "sst2", "--test", str(test), "--candidate", "a",
                           str(tmp_path), str(tmp_path / "a.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "evaluate: 2 --task but 1 --test (one each)"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("line, message", [
    ("{bad", "{train}:2: not valid JSON (Expecting property name enclosed in double quotes at "
             "column 2)"),
    ('{"question": null, "answer": "a\\n#### 2"}',
     "gsm8k source split 'train': row 1 has null field(s) ['question'] required by task 'gsm8k'"),
])
def test_the_prepare_job_names_a_malformed_local_file_in_one_line(tmp_path, line, message):
    """The workflow's prepare_data job printed the right message as the last line of a
    25-line traceback: now the message alone, exit 1, no output."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "gsm8k"
    src.mkdir()
    good = '{"question": "q", "answer": "a\\n#### 1"}\n'
    (src / "train.jsonl").write_text(good + line + "\n")
    (src / "test.jsonl").write_text(good)
    params = {"seed": 0, "data": {"source": "hf", "path": str(src), "test_path": None,
                                  "revision": None, "n_train": None, "n_validation": 1,
                                  "n_test": None}}
    proc = subprocess.run([sys.executable, str(root / "scripts/prepare_data.py"), "--task",
                           "gsm8k", "--out-dir", str(tmp_path / "out"), "--params",
                           json.dumps(params)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip() == message.format(train=src / "train.jsonl")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- ordermerge plan

def test_plan_names_a_config_or_cost_table_that_is_not_one(tmp_path, capsys):
    """`--configfile README.md` ended in yaml's ScannerError, `--measured README.md` in
    pandas' ParserError: each is one line naming the file (and the YAML's line)."""
    bad_yaml = tmp_path / "notes.md"
    bad_yaml.write_text("# notes\n\n```\nsnakemake --cores all\n```\n")
    out = tmp_path / "plan"
    assert main(["plan", "--configfile", str(bad_yaml), "--out", str(out)]) == 1
    assert one_line(capsys) == (f"ordermerge plan: {bad_yaml}:3:1: not valid YAML (found "
                                "character '`' that cannot start any token)")
    bad_csv = tmp_path / "cost.csv"
    bad_csv.write_text("a,b\n1,2\n3,4,5,6\n")
    assert main(["plan", "--measured", str(bad_csv), "--out", str(out)]) == 1
    err = one_line(capsys)
    assert err.startswith(f"ordermerge plan: {bad_csv}: not a cost table (Error tokenizing data"), err
    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert main(["plan", "--configfile", str(binary), "--out", str(out)]) == 1
    assert one_line(capsys) == f"ordermerge plan: {binary}: not a UTF-8 text file"
    assert not out.exists()


def test_plan_outside_the_project_says_where_to_run_it(tmp_path, capsys, monkeypatch):
    """Run elsewhere, it printed "[Errno 2] No such file or directory: 'config.yaml'"."""
    monkeypatch.chdir(tmp_path)
    assert main(["plan"]) == 1
    assert one_line(capsys) == (f"ordermerge plan: {tmp_path} is not the project directory (no "
                                "config.yaml and Snakefile here): run it where the Snakefile is")
    assert list(tmp_path.iterdir()) == []


def test_a_base_directory_without_a_tokenizer_is_one_line(run_dir, capsys):
    """transformers' "Couldn't instantiate the backend tokenizer from one of: (1) ..." ran
    over six lines: the first is kept, after the config key and the directory."""
    root, data, order = run_dir
    base = root / "base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "llama"}')
    assert main(["train", "--task", "gsm8k", "--base", str(base), "--data-dir", str(data),
                 "--order", str(order), "--out-dir", str(root / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"ordermerge train: base = {str(base)!r}: its tokenizer cannot be "
                          "loaded ("), err
    assert not (root / "out").exists()
