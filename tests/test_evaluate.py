"""The evaluation path: one handler per evaluator kind, one record shape, and the padding
and batching helpers the training and evaluation passes share."""
import pytest
import torch

from ordermerge.data.prepare import prepare
from ordermerge.data.registry import get_task
from ordermerge.data.tasks import TASKS
from ordermerge.evaluate import EVALUATORS, get_evaluator, handlers
from ordermerge.evaluate.run import evaluate_rows
from ordermerge.train import length_batches, mask_of, pad
from ordermerge.utils import InputError
from test_tasks import CharTokenizer, FixedLM

EXAMPLE_KEYS = {"id", "prompt", "output", "extracted", "extraction", "gold", "correct"}


def test_every_task_has_an_evaluator_with_a_handler():
    kinds = {get_evaluator(t.evaluator).kind for t in TASKS.values()}
    assert kinds == {"generate", "choice", "code", "pairwise", "classification", "span"}
    for ev in EVALUATORS.values():
        assert ev.handler is getattr(handlers, ev.kind)
    with pytest.raises(KeyError, match="unknown evaluator 'nope'"):
        get_evaluator("nope")


def test_a_choice_record_by_option_loglik():
    """sst2 rows through evaluate_rows with a model that prefers the tokens of ' positive':
    every example has the shared keys, the pick is the option with the highest sum, and
    score / score_norm are the means of correct / correct_norm."""
    task = get_task("sst2")
    rows = prepare("sst2", {"source": "toy", "path": None, "test_path": None, "revision": None,
                            "n_train": 4, "n_validation": 1, "n_test": 3}, 0, "tasks.sst2.data")["test"]
    tok = CharTokenizer()
    bias = torch.zeros(100)
    bias[[2 + (ord(c) % 90) for c in " positive"]] = 3.0
    rec = evaluate_rows(FixedLM(bias), tok, task, rows, batch_size=2)
    assert len(rows) == 3 and rec["n"] == 3 and rec["evaluator"] == "choice" and rec["choice_scoring"] == "loglik"
    opts = task.options(rows[0])
    for row, e in zip(rows, rec["examples"]):
        assert EXAMPLE_KEYS <= set(e) and e["id"] == row["id"] and e["prompt"] == task.prompt(row)
        assert e["extracted"] == max(range(len(opts)), key=lambda k: e["logliks"][k])
        assert e["output"] == opts[e["extracted"]] and e["correct"] == (e["extracted"] == e["gold"])
    assert rec["score"] == pytest.approx(sum(e["correct"] for e in rec["examples"]) / 3)
    assert rec["score_norm"] == pytest.approx(sum(e["correct_norm"] for e in rec["examples"]) / 3)
    with pytest.raises(ValueError, match="choice_scoring 'vote': loglik or generate"):
        evaluate_rows(FixedLM(bias), tok, task, rows, batch_size=2, choice_scoring="vote")


def test_generation_needs_a_token_budget():
    with pytest.raises(ValueError, match="evaluator 'gsm8k' generates: max_new_tokens is needed"):
        evaluate_rows(FixedLM(torch.zeros(100)), CharTokenizer(), get_task("gsm8k"),
                      [{"id": "gsm8k:test:0", "question": "1+1?", "answer": "#### 2"}], batch_size=1)


def test_an_empty_split_scores_nan():
    rec = evaluate_rows(FixedLM(torch.zeros(100)), CharTokenizer(), get_task("sst2"), [], batch_size=2)
    assert rec["n"] == 0 and rec["examples"] == [] and rec["score"] != rec["score"]


def test_pad_and_mask_right_and_left():
    rows = [[5, 6, 7], [8], []]
    assert pad(rows, 0).tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert pad(rows, -1, left=True).tolist() == [[5, 6, 7], [-1, -1, 8], [-1, -1, -1]]
    assert mask_of(rows).tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert mask_of(rows, left=True).tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert pad(rows, 0).dtype == torch.long


def test_length_batches_sort_stably_and_cut():
    assert length_batches([3, 1, 2, 1, 5], 2) == [[1, 3], [2, 0], [4]]
    assert length_batches([], 4) == []


def test_evaluation_jobs_pair_candidates_with_tasks(tmp_path):
    """One task: every candidate on it with the job's params; several: the i-th candidate
    on the i-th task with that task's params; what does not line up is named."""
    from ordermerge.evaluate.run import evaluation_jobs
    from ordermerge.utils import write_jsonl
    tests = []
    for t in ("gsm8k", "sst2"):
        tests.append(tmp_path / f"{t}.jsonl")
        write_jsonl(tests[-1], [{"id": f"{t}:0"}])
    cands = [["run0", "m0", "o0"], ["run1", "m1", "o1"]]
    [(task, test, rows, cfg, got)] = evaluation_jobs(["gsm8k"], tests[:1], cands, {"batch_size": 2})
    assert (task.name, test, rows, cfg, got) == ("gsm8k", tests[0], [{"id": "gsm8k:0"}], {"batch_size": 2}, cands)
    params = {"tasks": {"gsm8k": {"batch_size": 1}, "sst2": {"batch_size": 3}}}
    jobs = list(evaluation_jobs(["gsm8k", "sst2"], tests, cands, params))
    assert [(j[0].name, j[3], j[4]) for j in jobs] == [("gsm8k", {"batch_size": 1}, cands[:1]),
                                                      ("sst2", {"batch_size": 3}, cands[1:])]
    with pytest.raises(InputError, match="2 --task but 1 --test"):
        list(evaluation_jobs(["gsm8k", "sst2"], tests[:1], cands, params))
    with pytest.raises(InputError, match="one --candidate each"):
        list(evaluation_jobs(["gsm8k", "sst2"], tests, cands[:1], params))


def test_every_backend_is_one_entry_that_the_config_check_and_preflight_ask(monkeypatch):
    """Generation backends (backends.py) are one interface: the schema's enum is their names,
    the config check asks each backend what this machine lacks for the tasks it generates,
    an evaluation's params carry its engine settings, and the preflight its batch and share."""
    from ordermerge.evaluate import backends
    from ordermerge.schema import schema
    from ordermerge.workflow.config import environment_errors, eval_section, load
    enum = schema()["properties"]["evaluate"]["properties"]["backend"]["enum"]
    assert set(enum) == set(backends.BACKENDS)
    for b in backends.BACKENDS.values():
        assert callable(b.open) and isinstance(b.loads_model, bool)
    cfg = load()
    asked = []
    monkeypatch.setattr(backends.HF, "lacks",
                        staticmethod(lambda tasks: asked.append(tasks) or [f"hf lacks {tasks}"]))
    errors = environment_errors(cfg)
    # once, for the tasks whose outputs are generated (not the scored sst2, not an encoder's)
    assert len(asked) == 1 and "gsm8k" in asked[0] and not {"sst2", "glue_sst2"} & set(asked[0])
    assert f"hf lacks {asked[0]}" in errors
    cfg["evaluate"]["backend"] = "vllm"
    assert eval_section(cfg, "gsm8k")["vllm"] == cfg["evaluate"]["vllm"]
    assert "vllm" not in eval_section(load(), "gsm8k")
    assert backends.VLLM.memory(eval_section(cfg, "gsm8k"))[:2] == (
        1, cfg["evaluate"]["vllm"]["gpu_memory_utilization"])
    with pytest.raises(KeyError, match="unknown generation backend 'tgi'"):
        backends.get_backend("tgi")
