"""An evaluation job's fixed cost beside its work: K models evaluated by K jobs of one model
each (as the evaluate rule ran them before issue 23) against one job of K models (the
evaluate_runs and evaluate_seeds rules), each way cold (every job its own Python process)
and warm (forked from the warm worker, as a local run's jobs are: ordermerge/warm.py), side
by side in one run.

Each job is `scripts/evaluate.py` run as a rule runs it: `python -m ordermerge.warm
scripts/evaluate.py ...`, with a server of this script's own (warm) or none (cold).
The K models are copies of one tiny Llama (the tiny suite's shape by default) and the test
rows are toy GSM8K, so every job does the same work per model. From the wall times:

    fixed cost per job = (K one-model jobs - one K-model job) / (K - 1)
                       = interpreter start, imports, test split and judge set-up;
    work per model     = (one K-model job - fixed cost) / K  (load, generate, write).

The records of all four ways must be the same bytes (`same_records`); the report prints the
fixed cost and the work per model, cold and warm, the batched/unbatched ratio of wall time
per model, and the cold/warm ratio of the fixed cost.

    python bench/evaljobs.py                # K=4, 120 test rows, 3 alternating repeats
    python bench/evaljobs.py --k 2 --rows 8 --repeats 1 --new-tokens 4   # smoke size

Writes results/bench/evaljobs.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ordermerge import warm  # noqa: E402

WAYS = ["single-cold", "batched-cold", "single-warm", "batched-warm"]
ARCH = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "max_position_embeddings": 256, "tie_word_embeddings": False}


def setup(work: Path, k: int, rows: int) -> tuple[list[Path], Path]:
    """K copies of one tiny Llama (bf16, as SFT saves them) and a toy GSM8K test split."""
    import torch
    from transformers.utils import logging as hf_logging

    from ordermerge.data.prepare import prepare
    from ordermerge.models import build_tiny, save_model, train_tokenizer
    from ordermerge.utils import write_jsonl
    hf_logging.disable_progress_bar()
    split = prepare("gsm8k", {"source": "toy", "n_train": 200, "n_validation": 1, "n_test": rows},
                    seed=0, config_key="bench")
    test = work / "test.jsonl"
    write_jsonl(test, split["test"])
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in split["train"]], 384)
    model = build_tiny(ARCH, tok, seed=0)
    first = work / "model0"
    save_model(model, tok, first, torch.bfloat16)
    models = [first]
    for i in range(1, k):
        models.append(work / f"model{i}")
        shutil.copytree(first, models[-1], dirs_exist_ok=True)
    return models, test


def job(names: list[str], models: list[Path], outs: list[Path], test: Path, params: dict,
        threads: int, socket: str) -> float:
    """Wall seconds of one evaluation job over `models`, as the evaluate rules run it;
    `socket`: the warm worker's ("" runs it cold)."""
    cands = [a for n, m, o in zip(names, models, outs, strict=True)
             for a in ("--candidate", n, str(m), str(o))]
    cmd = [sys.executable, "-m", "ordermerge.warm", str(ROOT / "scripts/evaluate.py"), "--rule",
           "bench", "--threads", str(threads), "--task", "gsm8k", *cands, "--test", str(test),
           "--params", json.dumps(params)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", warm.ENV: socket}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"bench/evaljobs.py: evaluate.py failed:\n{proc.stderr[-3000:]}")
    if bool(socket) != bool(warm.USAGE.match(proc.stderr.rstrip("\n").rsplit("\n", 1)[-1])):
        raise SystemExit(f"bench/evaljobs.py: a {'warm' if socket else 'cold'} job ran "
                         f"{'cold' if socket else 'warm'}:\n{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=4, help="models per batched job (K sub-models)")
    p.add_argument("--rows", type=int, default=120, help="test rows (the tiny suite's GSM8K: 120)")
    p.add_argument("--new-tokens", type=int, default=40, help="max new tokens (the tiny suite's: 40)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="per job (the evaluate stage's cpus)")
    p.add_argument("--workdir", type=Path, default=ROOT / "results/bench/evaljobs")
    p.add_argument("--json", type=Path, default=ROOT / "results/bench/evaljobs.json")
    args = p.parse_args()
    if args.k < 2:
        p.error("--k must be at least 2 (the fixed cost is the difference of K and 1 jobs)")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    models, test = setup(work, args.k, args.rows)
    params = {"batch_size": args.rows, "max_new_tokens": args.new_tokens, "kind": "sft",
              "epoch": 1, "scheme": "shuffle", "model": "bench", "max_length": 128,
              "choice_scoring": "loglik", "judge": "local", "judge_model": None,
              "allow_code_execution": False}
    names = [f"run{i}" for i in range(args.k)]
    t0 = time.perf_counter()
    socket = warm.start(ROOT)
    if not socket:
        raise SystemExit("bench/evaljobs.py: the warm worker did not start")
    try:
        # the server's imports, paid once per run: its first job waits for them
        job(names[:1], models[:1], [work / "first-warm.json"], test, params, args.threads, socket)
        first_warm = time.perf_counter() - t0
        walls = {way: [] for way in WAYS}
        same = True
        for r in range(args.repeats):
            outs = {way: [work / f"{way}-{r}-{i}.json" for i in range(args.k)] for way in WAYS}
            # rotate which way goes first, so that drift on a shared machine hits all
            for way in WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]:
                kind, temp = way.split("-")
                sock = socket if temp == "warm" else ""
                if kind == "single":
                    walls[way].append(sum(job([n], [m], [o], test, params, args.threads, sock)
                                          for n, m, o in zip(names, models, outs[way])))
                else:
                    walls[way].append(job(names, models, outs[way], test, params, args.threads,
                                          sock))
            ref = [json.loads(p.read_text()) for p in outs[WAYS[0]]]
            same &= all([json.loads(p.read_text()) for p in outs[way]] == ref for way in WAYS)
    finally:
        warm.stop()
    med = {way: statistics.median(v) for way, v in walls.items()}
    res = {"k": args.k, "rows": args.rows, "new_tokens": args.new_tokens, "threads": args.threads,
           "wall_s": walls, "first_warm_job_s": first_warm, "same_records": same}
    for temp in ("cold", "warm"):
        single, batched = med[f"single-{temp}"], med[f"batched-{temp}"]
        fixed = (single - batched) / (args.k - 1)
        res[temp] = {"fixed_s_per_job": fixed, "work_s_per_model": (batched - fixed) / args.k,
                     "per_model_ratio": single / batched}
    res["fixed_cold_over_warm"] = res["cold"]["fixed_s_per_job"] / max(res["warm"]["fixed_s_per_job"], 1e-3)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1) + "\n")
    print(f"{args.k} models, {args.rows} rows, {args.new_tokens} new tokens, {args.threads} thread(s), "
          f"median of {args.repeats}:")
    print(f"{'':24}{'cold':>9}{'warm':>9}")
    for way, label in (("single", f"{args.k} one-model jobs"), ("batched", f"one {args.k}-model job")):
        print(f"  {label:22}{med[way + '-cold']:8.2f}s{med[way + '-warm']:8.2f}s")
    print(f"  {'fixed cost per job':22}{res['cold']['fixed_s_per_job']:8.2f}s"
          f"{res['warm']['fixed_s_per_job']:8.2f}s  (start-up, imports, test split, judge)")
    print(f"  {'work per model':22}{res['cold']['work_s_per_model']:8.2f}s"
          f"{res['warm']['work_s_per_model']:8.2f}s  (load, generate, write)")
    print(f"  unbatched / batched wall per model: {res['cold']['per_model_ratio']:.2f}x cold, "
          f"{res['warm']['per_model_ratio']:.2f}x warm")
    print(f"  fixed cost per job, cold / warm: {res['fixed_cold_over_warm']:.1f}x; the warm "
          f"worker's first job (its imports): {first_warm:.2f} s; same records: {same}")
    if not same:
        raise SystemExit("bench/evaljobs.py: the four ways' records differ")

if __name__ == "__main__":
    main()
