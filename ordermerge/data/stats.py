"""Sizes of the real datasets, for projecting a grid's cost before its data is downloaded
(ordermerge/workflow/projection.py; once results/data/<task> and the tokenizer are on disk the
projection counts them instead).

Per task: rows of the source's train and test splits (the datasets' published sizes; LLM-R
tasks: the full source splits, which the loader takes when data.n_train is null), and the
mean tokens of a training row (prompt + target), of a test prompt and of a reference answer.
Only GSM8K's tokens are measured (the real data, SmolLM2-135M's tokenizer, which splits
digits as Llama-2's does); the others are estimates from the datasets' typical lengths,
good to perhaps +-30%: a projection from them says so (`source`).
"""
from __future__ import annotations

MEASURED = "measured: the real GSM8K, SmolLM2's tokenizer"
ESTIMATED = "estimated lengths; published row counts"

STATS = {
    # train_rows, test_rows, train_tokens, prompt_tokens, answer_tokens, options
    "gsm8k": {"train_rows": 7473, "test_rows": 1319, "train_tokens": 191, "prompt_tokens": 68,
              "answer_tokens": 127, "source": MEASURED},
    "gsm8k_rft": {"train_rows": 110_000, "test_rows": 1319, "train_tokens": 200,
                  "prompt_tokens": 68, "answer_tokens": 127, "source": ESTIMATED},
    "math": {"train_rows": 155_000, "test_rows": 5000, "train_tokens": 320, "prompt_tokens": 90,
             "answer_tokens": 250, "source": ESTIMATED},
    "alpaca": {"train_rows": 52_002, "test_rows": 805, "train_tokens": 230, "prompt_tokens": 60,
               "answer_tokens": 350, "source": ESTIMATED},
    "code": {"train_rows": 66_862, "test_rows": 164, "train_tokens": 450, "prompt_tokens": 130,
             "answer_tokens": 150, "source": ESTIMATED},
    "sst2": {"train_rows": 67_349, "test_rows": 872, "train_tokens": 35, "prompt_tokens": 32,
             "answer_tokens": 2, "options": 2, "source": ESTIMATED},
    "mnli": {"train_rows": 392_702, "test_rows": 9815, "train_tokens": 60, "prompt_tokens": 58,
             "answer_tokens": 2, "options": 3, "source": ESTIMATED},
    "squad": {"train_rows": 87_599, "test_rows": 10_570, "train_tokens": 190,
              "prompt_tokens": 185, "answer_tokens": 5, "source": ESTIMATED},
    "agnews": {"train_rows": 120_000, "test_rows": 7600, "train_tokens": 60, "prompt_tokens": 58,
               "answer_tokens": 2, "options": 4, "source": ESTIMATED},
    "hellaswag": {"train_rows": 39_905, "test_rows": 10_042, "train_tokens": 110,
                  "prompt_tokens": 100, "answer_tokens": 25, "options": 4, "source": ESTIMATED},
    "mrpc": {"train_rows": 3668, "test_rows": 408, "train_tokens": 65, "prompt_tokens": 63,
             "answer_tokens": 2, "options": 2, "source": ESTIMATED},
    "winogrande": {"train_rows": 40_398, "test_rows": 1267, "train_tokens": 40,
                   "prompt_tokens": 35, "answer_tokens": 4, "options": 2, "source": ESTIMATED},
    "glue_sst2": {"train_rows": 67_349, "test_rows": 872, "train_tokens": 13, "prompt_tokens": 13,
                  "answer_tokens": 0, "source": ESTIMATED},
    "glue_mnli": {"train_rows": 392_702, "test_rows": 9815, "train_tokens": 40,
                  "prompt_tokens": 40, "answer_tokens": 0, "source": ESTIMATED},
    "squad_v1": {"train_rows": 87_599, "test_rows": 10_570, "train_tokens": 160,
                 "prompt_tokens": 160, "answer_tokens": 0, "source": ESTIMATED},
}
