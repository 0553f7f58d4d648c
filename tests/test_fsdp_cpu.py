"""Sharded SFT (FSDP2, ordermerge/sharding.py) on 2 CPU processes (gloo).

- accelerate (1.15) does not shard on CPU: with an FSDP plugin and ``cpu=True`` it makes a
  MULTI_CPU run and wraps the model in DistributedDataParallel, without an error. This is
  why the SFT script shards the model itself with torch's ``fully_shard``; the first test
  fails, as a signal to revisit, when accelerate starts sharding on CPU.
- The SFT script launched with the shipped ``config/accelerate/fsdp-7b-8gpu.yaml`` (2
  processes instead of 8) shards each decoder layer, trains on the rows and losses of the
  1-process run, saves the gathered checkpoint in the base's dtype, and resumes after a
  SIGKILL from its sharded state to the bytes of the uninterrupted sharded run: on the tiny
  model and on SmolLM2-135M (tied embeddings, 30 layers).

Tolerances, from the arithmetic (tests/ulps.py), not from one CPU's kernels. The two runs
train the same rows from the same weights; they differ only in how each gradient's sum over
the step's tokens is grouped (micro-batches, processes, the reduce-scatter) and in how the
kernels block the reductions. So:

- Losses per step and validation losses: relative 2e-5. Each is a float32 sum over at most
  batch_size x max_length = 768 tokens of positive per-token losses: each run's is within
  probable(768) = lambda sqrt(768) u (lambda = 6, u = 2^-24) = 1e-5 of exact, so the two are
  within 2e-5. (Was 1e-5; measured on an AMD EPYC: 6e-8 and 6e-7.)
- The float32 master weights: a gradient element is a sum of at most n = batch_size x
  max_length token terms, so the two runs' gradients differ by at most rho = 2 x
  probable(n) relative; AdamW's step lr_t m/sqrt(v) is scale-free, so its relative change is
  that of the gradients (times 2 for m and v together), and a weight that differs moves the
  next gradients by as much again (times 2). The weights then differ by at most
  delta = 8 x probable(n) x sum_t lr_t (the rates from steps.jsonl): 1.0e-6 for the tiny run
  (24 steps from 1e-3), 9.2e-10 for SmolLM2 (3 steps at 1e-5).
- The bf16 checkpoints round those weights. Two float32 values delta apart round to the same
  bf16 value, or, when a rounding boundary lies between them, to neighbours: each element
  is within delta + one bf16 step of the reference (one step, 2^-8 to 2^-7 of the element,
  for every element larger than 2^8 delta). Which elements flip is the CPU's business (on the
  AMD EPYC 2 of 39,840 elements, 5e-5 of the largest; on an Intel Xeon a flip fell on an
  element near the largest of its tensor, 1.6e-3 of it). How many can flip is not: a value
  placed anywhere in its bf16 interval of width q lies within delta of a boundary with
  probability delta / q, so the share of differing elements is bounded by the mean over the
  elements of min(1, 2 delta / q) (twice that, for values crowded at boundaries): about
  2,900 of the tiny run's 39,840 elements (0 to 4 differ on an AMD EPYC), 165,284 of
  SmolLM2's 134.5M (768 differ there). A run that skips a micro-batch differs in far more
  elements, by many steps: test_a_run_that_skips_a_micro_batch_fails_the_comparison.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ordermerge.sharding import ShardingError, requested
from test_sft import (SCRIPT, STEP_TOKENS, assert_same_training, compare_checkpoints,  # noqa: F401
                      env, read_steps, script_cmd, setup, sha, single, weight_drift)
from test_smollm2 import checkpoint  # noqa: F401  (SmolLM2-135M from its GGUF)

ROOT = Path(__file__).resolve().parent.parent
FSDP_CONFIG = ROOT / "config" / "accelerate" / "fsdp-7b-8gpu.yaml"

ACCELERATE = textwrap.dedent("""
    import json, sys, torch
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import FSDPModule
    from transformers import LlamaConfig, LlamaForCausalLM
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["LlamaDecoderLayer"], state_dict_type="SHARDED_STATE_DICT")
    acc = Accelerator(cpu=True, fsdp_plugin=plugin)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=2, num_attention_heads=2))
    model = acc.prepare(model)
    if acc.is_main_process:
        json.dump({"type": str(acc.distributed_type), "processes": acc.num_processes,
                   "wrapper": type(model).__name__, "sharded": isinstance(model, FSDPModule)},
                  open(sys.argv[1], "w"))
""")

def run(script: str, tmp_path, *args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    f = tmp_path / "script.py"
    f.write_text(script)
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), str(f), str(out), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_accelerate_does_not_shard_on_cpu_processes(tmp_path):
    seen = run(ACCELERATE, tmp_path)
    assert seen == {"type": "DistributedType.MULTI_CPU", "processes": 2,
                    "wrapper": "DistributedDataParallel", "sharded": False}


def sharded_cmd(*flags: str) -> list[str]:
    """accelerate launch of the SFT script with the shipped FSDP config, on 2 CPU processes."""
    from workflow_helpers import free_port
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
            "--num_processes", "2", "--main_process_port", str(free_port()), "--mixed_precision",
            "no", *flags, str(SCRIPT)]


def launch(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def sharded(setup, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("sharded") / "run"
    launch([*sharded_cmd(), *script_cmd(setup, out)])
    return out


def test_the_sharded_run_trains_as_the_one_process_run(sharded, single):  # noqa: F811
    run = assert_same_training(single, sharded, STEP_TOKENS)
    # one unit per decoder layer and the root; each process holds half of the parameters
    sizes = run["sharding"]
    assert sizes["strategy"] == "FULL_SHARD" and sizes["units"] == 2 + 1
    assert sizes["parameters"] == 39840 and sizes["parameters_on_main"] < 0.55 * 39840
    assert not (sharded / "resume").exists()


def test_shard_grad_op_trains_as_the_one_process_run(setup, single, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    launch([*sharded_cmd("--fsdp_sharding_strategy", "SHARD_GRAD_OP"), *script_cmd(setup, out)])
    assert assert_same_training(single, out, STEP_TOKENS)["sharding"]["strategy"] == "SHARD_GRAD_OP"


def test_a_run_that_skips_a_micro_batch_fails_the_comparison(setup, single, tmp_path):  # noqa: F811
    """The tolerance still sees a wrong training: a one-process run whose first epoch leaves
    out the rows of one micro-batch (2 of its first step's 8) fails both halves of the
    checkpoint comparison, at the epochs after it (on an AMD EPYC at epoch 2: 21,535 of
    39,840 elements beyond delta + one step, up to 169 steps; 27,564 differ, bound 2,898)."""
    *_, order = setup
    first = order["epochs"][0]
    skipped = tmp_path / "order.json"
    skipped.write_text(json.dumps({**order, "epochs": [first[:6] + first[8:], *order["epochs"][1:]]}))
    cmd = script_cmd(setup, tmp_path / "run")
    cmd[cmd.index("--order") + 1] = str(skipped)
    launch([sys.executable, str(SCRIPT), *cmd])
    delta = weight_drift(single, STEP_TOKENS)
    for name in ("epoch2", "epoch3"):
        seen = compare_checkpoints(single / name, tmp_path / "run" / name, delta)
        assert seen["beyond"] > 0.1 * seen["total"], seen
        assert seen["differ"] > seen["share_bound"], seen


def processes_naming(text: str) -> list[int]:
    """The processes whose command line contains `text`."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and text.encode() in (d / "cmdline").read_bytes():
                found.append(int(d.name))
        except OSError:
            pass  # ended meanwhile
    return found


def test_a_killed_sharded_run_resumes_to_the_bytes_of_the_uninterrupted_one(setup, sharded,  # noqa: F811
                                                                              tmp_path):
    out = tmp_path / "run"
    cmd = [*sharded_cmd(), *script_cmd(setup, out)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "resume" / "latest"
    deadline = time.time() + 600
    while not (latest.is_file() and latest.read_text().strip() >= "state-00000008"):
        assert proc.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.002)
    # torchrun starts each worker in a session of its own: kill every process of this run
    for pid in processes_naming(str(out)):
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not processes_naming(str(out))
    state = out / "resume" / latest.read_text().strip()
    resumed_at = int(state.name.split("-")[1])
    assert 8 <= resumed_at < 24
    # the state is sharded: each process's shards of weights and AdamW states, its random
    # states and the schedule (no full copy of the model anywhere)
    assert sorted(p.name for p in (state / "shards").iterdir()) == \
        [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert {"rank0.pt", "rank1.pt", "progress.json"} <= {p.name for p in state.iterdir()}
    assert not list(state.glob("*.safetensors"))
    for p in out.iterdir():  # Snakemake deletes a failed job's outputs before running it again
        if p.name != "resume":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    launch(cmd)
    run = json.loads((out / "run.json").read_text())
    assert run["resumed_from_steps"] == [resumed_at]
    for name in ("steps/step4", "epoch1", "epoch2", "epoch3"):
        assert sha(out / name / "model.safetensors") == sha(sharded / name / "model.safetensors"), name
    assert read_steps(out) == read_steps(sharded)
    assert (out / "samples.csv").read_text() == (sharded / "samples.csv").read_text()


def test_smollm2_sharded_trains_as_one_process(setup, checkpoint, tmp_path):  # noqa: F811
    """A real checkpoint: 30 layers, tied input and output embeddings (gathered as two
    tensors, saved once), a 49,152-token vocabulary; 3 steps of 4 rows."""
    root, _, data, _, order = setup
    short = tmp_path / "order.json"
    short.write_text(json.dumps({**order, "epochs": [order["epochs"][0][:12]]}))
    params = {"lr": 1e-5, "batch_size": 4, "micro_batch_size": 2, "max_length": 64,
              "warmup_ratio": 0.0, "eval_steps": [1]}
    args = ["--task", "gsm8k", "--base", str(checkpoint), "--data-dir", str(data), "--order",
            str(short), "--params", json.dumps(params)]
    launch([sys.executable, str(SCRIPT), *args, "--out-dir", str(tmp_path / "one")])
    launch([*sharded_cmd(), *args, "--out-dir", str(tmp_path / "two")])
    run = assert_same_training(tmp_path / "one", tmp_path / "two",
                               params["batch_size"] * params["max_length"])
    assert run["sharding"]["units"] == 30 + 1
    assert run["sharding"]["parameters_on_main"] < 0.55 * run["sharding"]["parameters"]
    with open(tmp_path / "two" / "epoch1" / "config.json") as fh:
        assert json.load(fh)["tie_word_embeddings"] is True
    assert "lm_head.weight" not in load_file(tmp_path / "two" / "epoch1" / "model.safetensors")


@pytest.mark.parametrize("env_vars, error", [
    ({"FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_config.fsdp_offload_params: 'true' is not supported"),
    ({"FSDP_ACTIVATION_CHECKPOINTING": "true"}, "set train.gradient_checkpointing instead"),
    ({"FSDP_SHARDING_STRATEGY": "HYBRID_SHARD"}, "fsdp_sharding_strategy: 'HYBRID_SHARD' is not"),
    ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "fsdp_auto_wrap_policy: 'SIZE_BASED_WRAP'"),
])
def test_fsdp_settings_the_sharded_run_cannot_honour_are_refused_by_name(env_vars, error):
    with pytest.raises(ShardingError, match=error):
        requested({"ACCELERATE_USE_FSDP": "true", **env_vars})


def test_what_the_launch_asks_for():
    assert requested({}) is None and requested({"ACCELERATE_USE_FSDP": "false"}) is None
    s = requested({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "2",
                   "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer,MistralDecoderLayer"})
    assert s.units == ("LlamaDecoderLayer", "MistralDecoderLayer") and not s.reshard_after_forward
    assert s.strategy == "SHARD_GRAD_OP"
    assert requested({"ACCELERATE_USE_FSDP": "true"}).strategy == "FULL_SHARD"


def test_the_config_check_reads_the_fsdp_config_before_any_job(tmp_path, monkeypatch):
    import yaml

    from ordermerge.sharding import from_accelerate_config
    from test_config import check_with
    shipped = yaml.safe_load(FSDP_CONFIG.read_text())
    assert from_accelerate_config(shipped) == requested({"ACCELERATE_USE_FSDP": "true"})
    assert from_accelerate_config({"distributed_type": "MULTI_GPU"}) is None
    # (without config.yaml's LoRA block: LoRA runs are not sharded, test_lora.py)
    check_with(sft={"accelerate_config": str(FSDP_CONFIG), "num_processes": 8}, lora=None)
    shipped["fsdp_config"]["fsdp_offload_params"] = True
    bad = tmp_path / "offload.yaml"
    bad.write_text(yaml.safe_dump(shipped))
    from ordermerge.workflow.config import ConfigError
    with pytest.raises(ConfigError, match=r"config key sft.accelerate_config: .*offload.yaml: "
                                          r"accelerate config fsdp_config.fsdp_offload_params: "
                                          r"'true' is not supported"):
        check_with(sft={"accelerate_config": str(bad), "num_processes": 8}, lora=None)
