"""The GPU paths, once each, in one command and one JSON: for a lent GPU's few minutes.

Runs three benches, each in its own process (so each peak memory is its own), on random
weights (no network, nothing to carry but the project):

    sft       bench/train.py: `ordermerge train` against a plain PyTorch loop, bf16 autocast
              (preset tinyllama: the 1.1B TinyLlama shape)
    merge     bench/merge_gpu.py: average, selection and resample of K=20 bf16 tensors on the
              GPU, and a slice merged on the CPU: the same bytes
    generate  bench/generate.py --backend vllm: transformers' generate_greedy against the
              vllm backend on the same 64 prompts, batch 64, 512 new tokens; vLLM's engine
              start-up apart. Without vLLM ($ORDERMERGE_VLLM_PYTHON, docs/vllm.md) it says so in
              the JSON and runs generate_greedy against plain generate instead; with
              --require-vllm that is a failure.

    python bench/gpu_check.py                 # on the GPU machine: at most ~8 minutes
    python bench/gpu_check.py --smoke         # CPU, toy sizes (the test suite runs this)

Writes results/bench/gpu_check.json: per part its command, wall seconds, whether it passed,
and the bench's own JSON (throughputs, ratios, peak memory in GiB, same-bytes checks); and
prints one line per part. Exits 1 if a part failed or a same-bytes check did not hold.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parts(smoke: bool, generate_backend: str, eager: bool) -> dict[str, tuple[list[str], int]]:
    """name -> (bench command after `python bench/`, timeout in seconds)."""
    if smoke:
        return {"sft": (["train.py", "--preset", "tiny", "--repeats", "1", "--rows", "32"], 300),
                "merge": (["merge_gpu.py", "--device", "cpu", "--k", "2", "--rows", "64", "--cols",
                           "64", "--rounds", "1", "--repeats", "1"], 120),
                "generate": (["generate.py", "--backend", generate_backend, "--preset", "tiny",
                              "--prompts", "8", "--batch", "8", "--new-tokens", "8", "--repeats",
                              "1"], 300)}
    gen = ["generate.py", "--backend", generate_backend, "--preset", "tinyllama", "--prompts",
           "64", "--batch", "64", "--new-tokens", "512", "--repeats", "2"]
    return {"sft": (["train.py", "--preset", "tinyllama", "--repeats", "2"], 150),
            "merge": (["merge_gpu.py", "--repeats", "5"], 60),
            "generate": (gen + (["--eager"] if eager else []), 270)}


def _gib(v) -> str:
    return "n/a (CPU)" if v is None else f"{v:.1f} GiB"


def verdict(name: str, res: dict) -> tuple[bool, str]:
    """Whether a part's own checks held, and its one-line summary."""
    if name == "sft":
        return True, (f"ordermerge train {res['ratio']:.2f}x the plain loop, "
                      f"peak {_gib(res.get('peak_gib'))}")
    if name == "merge":
        return bool(res["same_bytes_as_cpu"]), (
            f"same bytes as the CPU: {res['same_bytes_as_cpu']}; resample "
            f"{res['methods']['resample']['fraction_of_copy_bandwidth']:.2f} of copy bandwidth, "
            f"peak {_gib(res.get('peak_gib'))}")
    if "vllm_new_tokens_per_s" in res:
        return res["same_outputs"] > 0, (
            f"vllm {res['vllm_new_tokens_per_s']:.0f} new tokens/s vs generate_greedy "
            f"{res['hf_new_tokens_per_s']:.0f} ({res['ratio']:.2f}x), start-up "
            f"{res['start_s']:.0f} s, {res['same_outputs']}/{res['prompts']} outputs the same; "
            f"memory: transformers {_gib(res.get('hf_peak_gib'))}, vLLM "
            f"{_gib(res.get('vllm_device_gib'))}")
    return res["same_outputs"] == res["prompts"], (
        f"generate_greedy {res['new_tokens_per_s']:.0f} new tokens/s, "
        f"{res['ratio']:.2f}x plain generate (no vLLM)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, toy sizes")
    p.add_argument("--require-vllm", action="store_true", help="fail without vLLM")
    p.add_argument("--eager", action="store_true",
                   help="vLLM without CUDA graphs and compilation (faster start, slower decode)")
    p.add_argument("--json", type=Path, default=ROOT / "results/bench/gpu_check.json")
    args = p.parse_args()
    from ordermerge.evaluate.vllm_backend import VLLMError, worker_python
    try:
        worker_python()
        backend, vllm = "vllm", "available"
    except VLLMError as e:
        if args.require_vllm:
            sys.exit(f"gpu_check.py: {e}")
        backend, vllm = "hf", f"not run: {e}"
        print(f"gpu_check.py: vLLM {vllm}", flush=True)
    import torch
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("gpu_check.py: no CUDA device (use --smoke for the CPU run)")
    report = {"date": time.strftime("%Y-%m-%d"), "smoke": args.smoke, "vllm": vllm,
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "parts": {}}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cmd, timeout) in parts(args.smoke, backend, args.eager).items():
            out = Path(tmp) / f"{name}.json"
            full = [sys.executable, str(ROOT / "bench" / cmd[0]), *cmd[1:], "--json", str(out)]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                                      env=os.environ)
                code, tail = proc.returncode, (proc.stdout + proc.stderr)[-1500:]
            except subprocess.TimeoutExpired as e:
                code, tail = "timeout", f"over {timeout} s: {str(e.stdout or '')[-1000:]}"
            part = {"command": " ".join(["python", "bench/" + cmd[0], *cmd[1:]]),
                    "wall_s": round(time.perf_counter() - t0, 1)}
            if code == 0:
                part["result"] = json.loads(out.read_text())
                part["ok"], part["summary"] = verdict(name, part["result"])
            else:
                part.update(ok=False, summary=f"exit {code}", output=tail)
            failed |= not part["ok"]
            report["parts"][name] = part
            print(f"{name:9} {'ok  ' if part['ok'] else 'FAIL'} {part['wall_s']:6.1f} s  "
                  f"{part['summary']}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
