"""A calibration file for `ordermerge plan` (ordermerge/workflow/projection.py), measured on this machine.

Rates, each measured side by side in this process on the tiny suite's decoder shape
(config.yaml's model.tiny; random weights and token ids; one thread, as the workflow's jobs
run):
- train_flops_per_s: 6 x parameters x tokens/s of forward + backward + AdamW steps;
- forward_flops_per_s: 2 x parameters x tokens/s of no-grad forward passes;
- decode_step_s, decode_layer_s: greedy generation (KV cache, every row forced to the full
  length) of the shape and of the shape with twice the layers: the step time's fixed part
  and its part per layer;
- load_s: the time to load the tiny checkpoint (a checkpoint's fixed cost: its bytes take
  microseconds); io_bytes_per_s: 64 MiB saved and loaded back, over the time;
- merge_bytes_per_s: the merge engine's input bytes over its wall time (`average` of K copies).

Fixed costs (overhead_s, per rule): from a finished run of the workflow (--run, a project
directory whose results/benchmarks it reads; without it the reduced test config is run in a
temporary copy): each job's measured wall time less the work the projection gives it at the
rates above, the mean per rule (at least 0; the cost table sums the jobs).

    python bench/calibrate.py --out results/bench/calibration-cpu.yaml
    python bench/calibrate.py --run /path/to/finished/project --repeats 1   # smoke size

Then, in a finished run, the projection beside its measured cost table:

    ordermerge plan --calibration results/bench/calibration-cpu.yaml --measured results/tables/cost.csv
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def tiny(arch: dict, vocab: int, layers: int | None = None):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=arch["hidden_size"],
                      intermediate_size=arch["intermediate_size"],
                      num_hidden_layers=layers or arch["num_hidden_layers"],
                      num_attention_heads=arch["num_attention_heads"],
                      max_position_embeddings=arch["max_position_embeddings"],
                      tie_word_embeddings=arch["tie_word_embeddings"], pad_token_id=0,
                      bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rates(arch: dict, vocab: int, repeats: int, batch: int, length: int, new_tokens: int) -> dict:
    import torch

    from ordermerge.workflow.memory import Shape
    torch.set_num_threads(1)
    shape = Shape(arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"],
                  arch["num_attention_heads"], arch["num_attention_heads"], vocab,
                  arch["tie_word_embeddings"])
    n = shape.parameters()
    model = tiny(arch, vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(0))

    def train():
        for _ in range(4):
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()

    def forward():
        with torch.no_grad():
            for _ in range(4):
                model(input_ids=ids)
    out = {"train_flops_per_s": 6 * n * 4 * ids.numel() / timed(train, repeats),
           "forward_flops_per_s": 2 * n * 4 * ids.numel() / timed(forward, repeats)}

    def step_s(m) -> float:
        prompt = ids[:, : min(length, 32)]
        m.eval()

        def gen():
            with torch.no_grad():
                m.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return timed(gen, repeats) / new_tokens
    one, two = step_s(model), step_s(tiny(arch, vocab, 2 * arch["num_hidden_layers"]))
    per_layer = max(two - one, 0.0) / arch["num_hidden_layers"]
    compute = 2 * n * batch / out["forward_flops_per_s"]
    out["decode_layer_s"] = per_layer
    out["decode_step_s"] = max(one - arch["num_hidden_layers"] * per_layer - compute, 0.0)

    from transformers import AutoModelForCausalLM

    from ordermerge.merge.engine import merge
    with tempfile.TemporaryDirectory() as tmp:
        ck = Path(tmp) / "ck"
        model.to(torch.bfloat16)
        model.save_pretrained(ck)
        nbytes = sum(f.stat().st_size for f in ck.glob("*.safetensors"))
        # the fixed cost of a checkpoint: loading the tiny one (its bytes take microseconds)
        out["load_s"] = timed(lambda: AutoModelForCausalLM.from_pretrained(ck, dtype="auto"),
                              repeats)
        from safetensors.torch import load_file, save_file
        big = {"w": torch.zeros(32 << 20, dtype=torch.bfloat16)}  # 64 MiB

        def save_load():
            save_file(big, Path(tmp) / "big.safetensors")
            load_file(Path(tmp) / "big.safetensors")["w"].sum()
        out["io_bytes_per_s"] = 2 * (64 << 20) / timed(save_load, repeats)  # written, read
        k = 4
        copies = []
        for i in range(k):
            shutil.copytree(ck, Path(tmp) / f"m{i}")
            copies.append(Path(tmp) / f"m{i}")
        count = [0]

        def do_merge():
            count[0] += 1
            merge("average", copies, Path(tmp) / f"out{count[0]}")
        out["merge_bytes_per_s"] = k * nbytes / timed(do_merge, repeats)
    out["parameters"] = n
    return out


def fit_overheads(run: Path, configfiles: list[str], calibration: dict) -> dict:
    """Mean per rule of (measured wall - projected work) over the finished run's jobs."""
    from ordermerge.workflow.config import load
    from ordermerge.workflow.plan import Plan
    from ordermerge.workflow.projection import Projector, dry_run
    from ordermerge.report.cost import read_benchmarks
    here = os.getcwd()
    os.chdir(run)
    try:
        plan = Plan(load("config.yaml", *configfiles)).check()
        zero = {**calibration, "overhead_s": {"default": 0.0}}
        jobs = Projector(plan, zero).jobs(dry_run(Path("."), configfiles))
        measured = read_benchmarks("results/benchmarks").set_index("path")["wall_s"]
    finally:
        os.chdir(here)
    jobs = jobs[jobs["path"].isin(measured.index)]
    residual = measured.loc[jobs["path"]].to_numpy() - jobs["wall_s"].to_numpy()
    jobs = jobs.assign(residual=residual)
    per_rule = jobs.groupby("job_rule")["residual"].mean().clip(lower=0.0)
    return {"default": round(float(per_rule.median()), 3),
            **{r: round(float(v), 3) for r, v in sorted(per_rule.items())}}


def reduced_run(dest: Path) -> tuple[Path, list[str]]:
    """The reduced test config (tests/data/reduced.yaml) run in a copy of the project; the
    copy and its config files."""
    sys.path.insert(0, str(ROOT / "tests"))
    from workflow_helpers import REDUCED_ARGS, copy_project
    wd = copy_project(dest)
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "all", *REDUCED_ARGS],
                   cwd=wd, check=True, capture_output=True)
    return wd, list(REDUCED_ARGS[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=None,
                   help="a finished project run to fit the fixed costs on (default: run the "
                        "reduced test config in a temporary copy)")
    p.add_argument("--configfile", nargs="*", default=[],
                   help="the config files --run was run with (as snakemake --configfile)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "calibration-cpu.yaml")
    args = p.parse_args()
    import platform

    import yaml
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    arch, vocab = cfg["model"]["tiny"], cfg["model"]["tokenizer"]["vocab_size"]
    measured = rates(arch, vocab, args.repeats, args.batch, args.length, args.new_tokens)
    params = measured.pop("parameters")
    cal = {"device": f"{platform.processor() or platform.machine()}, 1 thread, "
                     f"{time.strftime('%Y-%m-%d')} (bench/calibrate.py; tiny shape, "
                     f"{params} parameters)",
           **{k: float(f"{v:.4g}") for k, v in measured.items()},
           # the tiny suite's barely trained models rarely emit their end-of-sequence token
           "decode_steps": "limit"}
    with tempfile.TemporaryDirectory() as tmp:
        run, files = (args.run, args.configfile) if args.run else reduced_run(Path(tmp) / "project")
        cal["overhead_s"] = fit_overheads(run, files, cal)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(cal, sort_keys=False))
    print(yaml.safe_dump(cal, sort_keys=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
