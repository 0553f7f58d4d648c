"""Greedy soup (ordermerge/merge/greedy_soup.py): the order of additions and the rejected
runs on a case computed by hand, the validation records' checks, and the final soup as the
engine writes it. The workflow's soups (validation records, candidate evaluations) are
checked on the reduced run in tests/test_workflow.py."""
import json
from pathlib import Path

import pytest
import torch

from ordermerge.merge.greedy_soup import RunningSoup, greedy, soup_order, validation_scores
from ordermerge.merge.methods import METHODS, method_id, parse_method_id
from ordermerge.utils import InputError
from test_taskvec import load, make


def test_the_order_of_additions_and_the_rejected_runs():
    # validation scores of runs 0..4: the order is 1 (0.8), 3 (0.7, before 4 at 0.7: lower
    # index), 4, 2 (0.6), 0 (0.5)
    scores = [0.5, 0.8, 0.6, 0.7, 0.7]
    soups = {(1, 3): 0.82,        # kept: 0.82 >= 0.8
             (1, 3, 4): 0.81,     # rejected: 0.81 < 0.82
             (1, 2, 3): 0.82,     # kept: equal scores do not drop
             (0, 1, 2, 3): 0.9}   # kept
    asked = []

    def soup_score(members):
        asked.append(tuple(members))
        return soups[tuple(members)]
    kept, steps = greedy(scores, soup_score)
    assert asked == [(1, 3), (1, 3, 4), (1, 2, 3), (0, 1, 2, 3)]
    assert [s["run"] for s in steps] == [1, 3, 4, 2, 0]
    assert [s["kept"] for s in steps] == [True, True, False, True, True]
    assert steps[0] == {"run": 1, "soup": [1], "score": 0.8, "kept": True}
    assert kept == [0, 1, 2, 3]


def test_a_soup_that_never_improves_is_the_best_run():
    kept, steps = greedy([0.1, 0.3, 0.2], lambda m: 0.0)
    assert kept == [1] and [s["kept"] for s in steps] == [True, False, False]


def test_the_entry():
    assert method_id("greedy_soup") == "greedy-soup"
    assert parse_method_id("greedy-soup") == ("greedy_soup", {})
    m = METHODS["greedy_soup"]
    assert m.data == "validation_records" and m.label == "greedy soup" and not m.random


def test_validation_records_must_be_of_their_runs(tmp_path):
    subs = [tmp_path / "run0", tmp_path / "run1"]
    recs = []
    for i, s in enumerate(subs):
        r = tmp_path / f"v{i}.json"
        r.write_text(json.dumps({"score": 0.25 * (i + 1), "model_path": str(s)}))
        recs.append(r)
    assert validation_scores(subs, recs) == ([0.25, 0.5], [None, None])
    with pytest.raises(InputError, match=r"v1.json is the record of .*run1, not of .*run0"):
        validation_scores(subs, recs[::-1])
    with pytest.raises(InputError, match="1 validation records for 2 runs"):
        validation_scores(subs, recs[:1])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="bad.json: not an evaluation record"):
        validation_scores(subs, [recs[0], tmp_path / "bad.json"])


def test_records_of_another_task_other_rows_or_other_settings_are_refused(tmp_path):
    """A wrong --task or --validation-split, or candidates scored under other evaluate
    settings than the runs (max_new_tokens 8 against 40 scored 0.033 against 0.15): each
    is refused, naming the record; a record without settings falls back on its provenance."""
    from ordermerge.merge.greedy_soup import check_settings
    sub, rec = tmp_path / "run0", tmp_path / "v0.json"
    made = {"max_new_tokens": 40, "batch_size": 8, "backend": "hf"}
    rec.write_text(json.dumps({"score": 0.5, "model_path": str(sub), "task": "gsm8k",
                               "examples": [{"id": "a"}, {"id": "b"}], "settings": made}))
    rows = [{"id": "b"}, {"id": "a"}]
    assert validation_scores([sub], [rec], "gsm8k", rows) == ([0.5], [made])
    with pytest.raises(InputError, match=r"v0.json is an evaluation of task 'gsm8k', not of 'sst2'"):
        validation_scores([sub], [rec], "sst2", rows)
    with pytest.raises(InputError, match=r"v0.json was evaluated on other rows than the validation "
                                         r"split's \(2 rows against 3; e.g. 'c' is in one only\)"):
        validation_scores([sub], [rec], "gsm8k", rows + [{"id": "c"}])
    check_settings([rec], [made], {**made, "kind": "soup", "scheme": "cli"})  # labels differ only
    with pytest.raises(InputError, match=r"evaluate setting max_new_tokens is 8 for the candidate "
                                         r"soups but 40 in .*v0.json"):
        check_settings([rec], [made], {**made, "max_new_tokens": 8})
    with pytest.raises(InputError, match="v0.json does not say the evaluate settings"):
        check_settings([rec], [None], made)
    # a workflow record made before records carried settings: its provenance's params
    rec.write_text(json.dumps({"score": 0.5, "model_path": str(sub), "task": "gsm8k",
                               "examples": [{"id": "a"}, {"id": "b"}]}))
    (tmp_path / "v0.json.prov.json").write_text(json.dumps({"params": {**made, "kind": "sft"}}))
    assert validation_scores([sub], [rec], "gsm8k", rows) == ([0.5], [made])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_candidates_in_two_reads_are_the_running_float32_sum_over_m(tmp_path, dtype):
    """Each candidate: (float32 sum of the soup's runs in joining order + the run) / m,
    rounded once; the same arithmetic as the engine's uniform average (sum, then one
    division) but in joining order, so within (m - 1) float32 roundings of the sum of
    each other before the division, and bit-equal when the joining order is ascending. The
    sums of rejected candidates and replaced sums are removed as they go."""
    from ordermerge.merge.engine import merge_into
    _, subs = make(tmp_path, k=4, dtype=dtype, step=0.05, moved=0.9)
    runs = [load(s) for s in subs]
    work = tmp_path / "work"
    work.mkdir()
    soup = RunningSoup(subs, 2, work)  # the best run: 2
    kept = [2]
    for new, keep in [(0, True), (3, False), (1, True)]:
        members = sorted(kept + [new])
        d = soup.candidate(members)
        got = load(d)
        order = kept + [new]  # joining order
        for n, x in got.items():
            acc = runs[order[0]][n].float()
            for i in order[1:]:
                acc = acc + runs[i][n].float()
            want = (acc / len(order)).to(dtype)
            assert got[n].dtype == dtype and torch.equal(got[n], want), (n, members)
            # beside the engine's uniform average of the same runs (ascending order)
            ref = tmp_path / ("ref-" + d.name)
            ref.mkdir(exist_ok=True)
            merge_into(ref, "average", [subs[i] for i in members])
            r = load(ref)[n].double()
            total = sum(runs[i][n].double().abs() for i in members) / len(members)
            ulp32 = torch.finfo(torch.float32).eps / 2
            tol = (len(members) - 1) * ulp32 * total * 2 + torch.finfo(dtype).eps * r.abs()
            assert ((got[n].double() - r).abs() <= tol).all(), n
        assert (d / "config.json").is_file() or not (Path(subs[0]) / "config.json").is_file()
        if keep:
            soup.kept(members)
            kept.append(new)
        on_disk = sorted(p.name for p in work.iterdir())
        assert len([p for p in on_disk if p.startswith("sum-")]) <= 2 and d.name in on_disk
    # bit-equal to the ascending-order average where joining order is ascending
    soup = RunningSoup(subs, 0, tmp_path / "work2")
    (tmp_path / "work2").mkdir()
    ref = tmp_path / "ref01"
    ref.mkdir()
    merge_into(ref, "average", [subs[0], subs[1]])
    a, b = load(soup.candidate([0, 1])), load(ref)
    assert all(torch.equal(a[n], b[n]) for n in a)
    with pytest.raises(ValueError, match="not the soup"):
        soup.candidate([2, 3])


def test_greedy_tells_the_running_sum_of_each_kept_candidate():
    told = []
    scores = [0.5, 0.7, 0.6]
    assert soup_order(scores) == [1, 2, 0]
    kept, _ = greedy(scores, lambda m: {(1, 2): 0.65, (0, 1): 0.8}[tuple(m)], told.append)
    assert kept == [0, 1] and told == [[0, 1]]


def test_the_final_soup_is_the_uniform_average_of_the_kept_runs(tmp_path):
    from ordermerge.merge.engine import merge
    _, subs = make(tmp_path, k=3, dtype=torch.float32)
    merge("greedy_soup", subs, tmp_path / "soup", weights=[0.5, 0.0, 0.5],
          extra={"soup": {"kept": [0, 2]}})
    merge("average", [subs[0], subs[2]], tmp_path / "avg")
    soup, avg = load(tmp_path / "soup"), load(tmp_path / "avg")
    for n in soup:
        # weights 0.5, 0, 0.5: halving is exact and the zero term adds an exact zero, so the
        # same IEEE operations as the average of the two (was: within 1.2e-7 relative)
        assert torch.equal(soup[n], avg[n]), n
    recipe = json.loads((tmp_path / "soup" / "merge.json").read_text())
    assert recipe["method_id"] == "greedy-soup" and recipe["soup"] == {"kept": [0, 2]}
    assert recipe["weights"] == [0.5, 0.0, 0.5] and len(recipe["sub_models"]) == 3


def test_the_command_line_makes_a_soup_from_validation_records(tmp_path, capsys):
    """ordermerge merge --method greedy_soup on three tiny Llamas: the runs' validation
    records (made by the evaluate code), the candidates evaluated on the same rows."""
    from ordermerge.cli import main
    from ordermerge.data.prepare import prepare
    from ordermerge.data.registry import get_task
    from ordermerge.evaluate.run import evaluate_model, write_evaluation
    from ordermerge.models import build_tiny, train_tokenizer
    from ordermerge.utils import write_jsonl
    task = get_task("gsm8k")
    data = prepare("gsm8k", {"source": "toy", "n_train": 40, "n_validation": 6, "n_test": 1},
                   seed=0, config_key="test")
    val = tmp_path / "validation.jsonl"
    write_jsonl(val, data["validation"])
    tok = train_tokenizer([task.prompt(r) + " " + task.target(r) for r in data["train"]], 300)
    arch = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 256, "tie_word_embeddings": False}
    runs, records = [], []
    cfg = {"max_new_tokens": 8, "batch_size": 8, "choice_scoring": "loglik", "backend": "hf",
           "kind": "sft", "epoch": 1, "scheme": "shuffle", "model": "tiny", "max_length": 128}
    for seed in range(3):
        d = tmp_path / f"run{seed}"
        build_tiny(arch, tok, seed=seed).save_pretrained(d)
        tok.save_pretrained(d)
        rec = tmp_path / f"run{seed}.json"
        write_evaluation(rec, evaluate_model(task, d, data["validation"], cfg, name=f"run{seed}"))
        runs.append(d)
        records.append(rec)
    out = tmp_path / "soup"
    assert main(["merge", "--method", "greedy_soup", "--task", "gsm8k", "--validation",
                 *map(str, records), "--validation-split", str(val), "--evaluate",
                 json.dumps({"max_new_tokens": 8, "batch_size": 8}), "-o", str(out),
                 *map(str, runs)]) == 0
    printed = json.loads(capsys.readouterr().out)
    recipe = json.loads((out / "merge.json").read_text())
    soup = recipe["soup"]
    assert printed["kept"] == soup["kept"] and recipe["method_id"] == "greedy-soup"
    scores = [json.loads(r.read_text())["score"] for r in records]
    assert soup["validation_scores"] == scores and len(soup["steps"]) == 3
    assert [s["run"] for s in soup["steps"]] == sorted(range(3), key=lambda i: (-scores[i], i))
    assert recipe["weights"] == [1 / len(soup["kept"]) if i in soup["kept"] else 0.0 for i in range(3)]
    assert soup["settings"] == json.loads(records[0].read_text())["settings"] == {
        k: v for k, v in cfg.items() if k not in ("kind", "epoch", "scheme", "model")}
    # other settings than the records', an unknown setting, the wrong task: one line each,
    # the soup written above untouched
    before = (out / "merge.json").read_bytes()
    soup_args = ["merge", "--method", "greedy_soup", "--validation", *map(str, records),
                 "--validation-split", str(val), "--overwrite", "-o", str(out), *map(str, runs)]
    for extra, message in [
            (["--task", "gsm8k", "--evaluate", '{"max_new_tokens": 4}'],
             "greedy_soup: evaluate setting max_new_tokens is 4 for the candidate soups but 8 in "),
            (["--task", "gsm8k", "--evaluate", '{"max_new_token": 4}'],
             "--evaluate max_new_token: unknown key (allowed here: "),
            (["--task", "gsm8k", "--validation-split", str(tmp_path / "no.jsonl")],
             f"greedy_soup: validation split {tmp_path / 'no.jsonl'}: No such file or directory"),
            (["--task", "sst2"], f"greedy_soup: {records[0]} is an evaluation of task 'gsm8k', not of 'sst2'")]:
        assert main(soup_args + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ordermerge merge: " + message) and "\n" not in err, err
    assert (out / "merge.json").read_bytes() == before
    assert main(["merge", "--method", "greedy_soup", "-o", str(tmp_path / "x"), *map(str, runs)]) == 2
    assert "greedy_soup needs --validation" in capsys.readouterr().err
    # the per-run data of another method (merge/rundata.py), each named with its readers
    for method, extra, message in [
            ("greedy_soup", ["--fisher", str(runs[0]), str(runs[1])],
             "--fisher: diagonal_fisher of fisher; greedy_soup reads validation_records"),
            ("average", ["--task", "gsm8k", "--validation", *map(str, records)],
             "--validation, --task: validation_records of greedy_soup; average reads no per-run data"),
            ("fisher", ["--validation-split", str(tmp_path / "v.jsonl")],
             "--validation-split: validation_records of greedy_soup; fisher reads diagonal_fisher")]:
        assert main(["merge", "--method", method, "-o", str(tmp_path / "y"), *map(str, runs), *extra]) == 2
        assert capsys.readouterr().err.strip() == f"ordermerge merge: {message}"
    assert not (tmp_path / "y").exists()
