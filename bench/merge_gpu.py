"""GPU merge throughput (issue 3, item 8): K tensors of Llama-2-7b MLP shape held on the device.

Measures, with CUDA events, the median of --repeats after a warm-up:
- copy: `out.copy_(x)` of one tensor (read + write), the bandwidth reference;
- average, select and resample (n rounds) over a [K, rows, cols] bf16 stack with the torch
  methods the engine runs on GPUs (ordermerge/merge/{average,select,resample}.py);
and prints Gelem/s per method and its effective bandwidth (bytes it must move: K inputs read
and one output written per element) as a fraction of the copy's. It checks that the device
result equals the CPU's bytes on a slice (determinism across devices).

    python bench/merge_gpu.py                      # K=20, 11008 x 4096, on cuda
    python bench/merge_gpu.py --device cpu --rows 256 --k 4 --repeats 2   # smoke test

Prints a table and writes results/bench/merge_gpu.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ordermerge.merge import average, fused, resample, rng, select  # noqa: E402


def timer(device: torch.device):
    """A function that times fn() in seconds on `device` (CUDA events on GPUs)."""
    if device.type == "cuda":
        def run(fn):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            return a.elapsed_time(b) / 1000
    else:
        def run(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--rows", type=int, default=11008)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", type=Path, default=ROOT / "results/bench/merge_gpu.json")
    args = p.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("merge_gpu.py: CUDA is not available (use --device cpu for a smoke test)")
    k, n = args.k, args.rows * args.cols
    g = torch.Generator(device=dev).manual_seed(0)
    base = (torch.randn(n, generator=g, device=dev) * 0.02).to(torch.bfloat16)
    moved = torch.rand(k, n, generator=g, device=dev) < 0.7
    delta = (torch.randn(k, n, generator=g, device=dev) * 0.002).to(torch.bfloat16)
    stack = torch.where(moved, base + delta, base)
    del moved, delta
    sampler = rng.Sampler([1.0 / k] * k, dev)
    w = [1.0 / k] * k
    out = torch.empty_like(base)
    methods = {
        "copy": lambda: out.copy_(stack[0]),
        "average": lambda: average.merge_chunk(stack, w),
        "select": lambda: select.merge_chunk(stack, sampler, seed=1, name="mlp", start=0),
        "resample": lambda: resample.merge_chunk(stack, base, sampler, rounds=args.rounds, seed=1,
                                                 name="mlp", start=0),
    }
    time_it = timer(dev)
    res = {}
    for name, fn in methods.items():
        fn()  # warm-up (allocator, kernels)
        times = [time_it(fn) for _ in range(args.repeats)]
        t = statistics.median(times)
        moved_bytes = (2 if name == "copy" else k + 1) * n * 2  # bytes read + written
        res[name] = {"s": t, "gelem_per_s": n / t / 1e9, "effective_tb_per_s": moved_bytes / t / 1e12}
    copy_bw = res["copy"]["effective_tb_per_s"]
    for name in ("average", "select", "resample"):
        res[name]["fraction_of_copy_bandwidth"] = res[name]["effective_tb_per_s"] / copy_bw

    # determinism across devices: a slice merged on the CPU gives the same bytes
    lo, m = n // 3, min(n - n // 3, 1 << 16)
    cpu_stack, cpu_base = stack[:, lo:lo + m].cpu(), base[lo:lo + m].cpu()
    cpu_sampler = rng.Sampler(w)
    want = select.merge_chunk(cpu_stack, cpu_sampler, seed=1, name="mlp", start=lo)
    got = select.merge_chunk(stack[:, lo:lo + m].contiguous(), sampler, seed=1, name="mlp", start=lo)
    want_r, _ = resample.merge_chunk(cpu_stack, cpu_base, cpu_sampler, rounds=args.rounds, seed=1,
                                     name="mlp", start=lo)
    got_r, _ = resample.merge_chunk(stack[:, lo:lo + m].contiguous(), base[lo:lo + m], sampler,
                                    rounds=args.rounds, seed=1, name="mlp", start=lo)
    same = (torch.equal(got.cpu().view(torch.int16), want.view(torch.int16))
            and torch.equal(got_r.cpu().view(torch.int16), want_r.view(torch.int16)))
    if fused.available(torch.bfloat16):
        fused_r, _ = fused.merge_chunk(cpu_stack, cpu_base, cpu_sampler, rounds=args.rounds, seed=1,
                                       name="mlp", start=lo)
        same = same and torch.equal(fused_r.view(torch.int16), want_r.view(torch.int16))

    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    report = {"device": device_name, "date": time.strftime("%Y-%m-%d"), "k": k,
              "shape": [args.rows, args.cols], "rounds": args.rounds, "repeats": args.repeats,
              "same_bytes_as_cpu": same, "methods": res,
              "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None}
    print(f"{device_name}: K={k}, {args.rows}x{args.cols} bf16, median of {args.repeats}")
    print(f"{'':10}{'ms':>9}{'Gelem/s':>10}{'TB/s':>8}{'x copy':>8}")
    for name, r in res.items():
        print(f"{name:10}{r['s'] * 1e3:9.2f}{r['gelem_per_s']:10.1f}{r['effective_tb_per_s']:8.2f}"
              f"{r.get('fraction_of_copy_bandwidth', 1.0):8.2f}")
    print(f"same bytes as the CPU: {same}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if not same:
        sys.exit("merge_gpu.py: the device's bytes differ from the CPU's")


if __name__ == "__main__":
    main()
