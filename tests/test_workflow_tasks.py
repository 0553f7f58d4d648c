"""The pipeline over several task kinds at once (a reduced config/tiny-all.yaml)."""
import json

import pandas as pd
import pytest

from workflow_helpers import ROOT, check_job_imports, copy_project, snakemake

pytestmark = pytest.mark.workflow
TASKS = ["gsm8k_rft", "math", "sst2", "mnli", "squad", "hellaswag", "code", "alpaca", "glue_sst2",
         "squad_v1"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    wd = copy_project(tmp_path_factory.mktemp("wf-tasks") / "project")
    (wd / "reduced-all.yaml").write_text((ROOT / "tests/data/reduced-all.yaml").read_text())
    from ordermerge.runner import TRACE_ENV
    snakemake(wd, "--configfile", "config.yaml", "reduced-all.yaml", timeout=1500, env={TRACE_ENV: "1"})
    return wd


def test_every_job_imported_only_the_code_and_packages_its_rule_declares(done):
    """As the reduced run's (test_workflow.py), over ten task kinds: each evaluator's
    modules and packages (AlpacaEval's among them) are its rule's inputs and pins."""
    checked, rules, used = check_job_imports(done)
    assert {"alpaca-eval", "torch", "transformers"} <= used
    assert checked >= 40 and {"sft", "evaluate_runs", "merge_seeds", "table1"} <= rules


def test_table_has_a_column_per_task(done):
    table = pd.read_csv(done / "results/tables/table1.csv", index_col=0)
    from ordermerge.report.tables import task_columns
    assert sorted(task_columns(table)) == sorted(TASKS)
    # every example-level scorer gives the per-item scores of the intervals and tests
    assert table.loc["single", [f"{t}_lo" for t in TASKS]].notna().all()
    assert table.loc["weighted-avg", [f"{t}_p" for t in TASKS]].between(0, 1).all()
    assert (table.loc["single", [f"{t}_n" for t in TASKS]] == 2).all()  # K sub-models each
    assert table.loc["single", TASKS].between(0, 100).all()


@pytest.mark.parametrize("task", TASKS)
def test_evaluation_records_keep_every_example(done, task):
    model = "tiny-bert" if task in ("glue_sst2", "squad_v1") else "tiny-llama"
    rec = json.loads((done / f"results/eval/{model}/{task}/shuffle/epoch1/merged/avg.json").read_text())
    assert rec["task"] == task and rec["n"] == 8 and len(rec["examples"]) == 8
    ex = rec["examples"][0]
    assert {"id", "prompt", "output", "extracted", "gold", "correct"} <= set(ex)
    assert rec["score"] == pytest.approx(sum(e["correct"] for e in rec["examples"]) / 8)
    if task in ("sst2", "hellaswag"):
        assert rec["choice_scoring"] == "loglik" and len(ex["logliks"]) == len(ex["options"])
    if task == "mnli":
        assert rec["choice_scoring"] == "generate" and ex["options"] == ["Yes", "Maybe", "No"]
    if task in ("squad", "squad_v1"):
        assert isinstance(ex["gold"], list)
    if task == "alpaca":
        assert rec["win_rate"] == pytest.approx(100 * rec["score"]) and rec["judge"].startswith("local")
        assert ex["judgment"]["generator_2"] == "merged-avg" and "preference" in ex["judgment"]
    if task == "code":
        assert rec["pass@1"] == rec["score"] and ex["execution"]["status"] in ("passed", "failed", "timeout", "killed")
        assert rec["sandbox"]["network"]
    if task == "glue_sst2":
        assert rec["evaluator"] == "encoder_classification" and len(ex["logits"]) == 2


def test_encoder_tasks_train_from_the_tiny_bert(done):
    from transformers import AutoConfig
    base = AutoConfig.from_pretrained(done / "results/base/tiny-bert/model")
    assert base.model_type == "bert"
    sub = AutoConfig.from_pretrained(done / "results/sft/tiny-bert/squad_v1/shuffle/run0/epoch1")
    assert sub.architectures == ["BertForQuestionAnswering"]
    merged = AutoConfig.from_pretrained(done / "results/merged/tiny-bert/glue_sst2/shuffle/epoch1/avg")
    assert merged.architectures == ["BertForSequenceClassification"] and merged.num_labels == 2


def test_table2_puts_encoder_and_decoder_datasets_in_one_column(done):
    """The tiny BERT's GLUE SST-2 and the tiny Llama's LLM-R SST-2 share Table 2's column."""
    table = pd.read_csv(done / "results/tables/table2.csv", index_col="row")
    assert list(dict.fromkeys(table["model"])) == ["tiny-bert", "tiny-llama"]  # encoders first
    bert = table[table.model == "tiny-bert"]
    rec = json.loads((done / "results/eval/tiny-bert/glue_sst2/shuffle/epoch1/merged/select-s0.json").read_text())
    assert bert.loc["param-selection", "SST-2"] == pytest.approx(100 * rec["score"], abs=1e-3)
    assert {"SST-2", "MNLI", "SQuAD"} <= set(table.columns)
