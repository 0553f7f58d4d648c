"""LoRA runs (ordermerge/lora.py): the full run's rows per step, a PEFT adapter as the
checkpoint, exactly the update B A x alpha / r on the targeted layers, resume after SIGKILL
to the same bytes, and the settings it refuses by name."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from test_sft import PARAMS, SCRIPT, env, read_steps, script_cmd, setup, sha, single  # noqa: F401
from workflow_helpers import ROOT, made_once

ADAPTER = {"kind": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
LORA = {**PARAMS, "lr": 1e-2, "adapter": ADAPTER}
EPS32 = torch.finfo(torch.float32).eps


def lora_cmd(setup, out) -> list[str]:
    cmd = script_cmd(setup, out)
    cmd[cmd.index("--params") + 1] = json.dumps(LORA)
    return cmd


@pytest.fixture(scope="module")
def lora_run(setup, tmp_path_factory):
    """One uninterrupted LoRA run in a fresh process (the reference for its resume)."""
    def run(out):
        subprocess.run([sys.executable, str(SCRIPT), *lora_cmd(setup, out)], check=True,
                       env=env(), capture_output=True)
    return made_once(tmp_path_factory, "lora-single", run)


def test_a_lora_run_trains_its_adapter_on_the_full_runs_rows(setup, single, lora_run):
    _, base, *_ = setup
    # the same rows in every optimizer step as the full fine-tuning run of the same order
    assert [s["ids"] for s in read_steps(lora_run)] == [s["ids"] for s in read_steps(single)]
    for name in ("steps/step4", "epoch1", "epoch2", "epoch3"):
        ck = lora_run / name
        assert {"adapter_config.json", "adapter_model.safetensors", "provenance.json"} <= \
            {p.name for p in ck.iterdir()}, name
        assert not (ck / "model.safetensors").exists() and not (ck / "README.md").exists()
    ck = lora_run / "epoch3"
    cfg = json.loads((ck / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], sorted(cfg["target_modules"])) == (4, 8, ["q_proj", "v_proj"])
    assert cfg["base_model_name_or_path"] == str(base)  # named, not copied
    prov = json.loads((ck / "provenance.json").read_text())
    assert str(base / "model.safetensors") in prov["inputs"]  # hashed as an input
    weights = load_file(ck / "adapter_model.safetensors")
    # A and B of q_proj and v_proj in each of the 2 layers, float32 as trained
    assert len(weights) == 2 * 2 * 2 and all(v.dtype == torch.float32 for v in weights.values())
    assert {k.split(".lora_")[1].split(".")[0] for k in weights} == {"A", "B"}
    first = load_file(lora_run / "epoch1" / "adapter_model.safetensors")
    moved = [k for k in weights if "lora_B" in k and not torch.equal(weights[k], first[k])]
    assert moved and all(weights[k].abs().max() > 0 for k in weights if "lora_B" in k)


def test_the_adapter_is_the_update_b_a_alpha_over_r_of_its_layers(setup, lora_run):
    """PEFT's merge of the checkpoint onto the base is W + (alpha / r) B A on exactly the
    targeted layers (every other tensor is the base's, bit for bit). Tolerance: each element
    of B A sums r products, and the scaling and the addition round once each, so an element
    may differ by (r + 2) eps (|W| + s |B| |A|) between two orders of the same arithmetic."""
    from peft import PeftModel

    from ordermerge.models import load_model
    _, base, *_ = setup
    ck = lora_run / "epoch3"
    plain, _ = load_model(base, dtype=torch.float32)
    want = {k: v.clone() for k, v in plain.state_dict().items()}
    merged = PeftModel.from_pretrained(load_model(base, dtype=torch.float32)[0], ck).merge_and_unload()
    got = merged.state_dict()
    weights = load_file(ck / "adapter_model.safetensors")
    s = ADAPTER["alpha"] / ADAPTER["r"]
    changed = set()
    for key, a in weights.items():
        if ".lora_A." not in key:
            continue
        b = weights[key.replace(".lora_A.", ".lora_B.")]
        target = key.split("base_model.model.", 1)[1].replace(".lora_A.weight", ".weight")
        w = want[target]
        bound = (ADAPTER["r"] + 2) * EPS32 * (w.abs() + s * (b.abs() @ a.abs()))
        assert ((got[target] - (w + s * (b @ a))).abs() <= bound).all(), target
        assert not torch.equal(got[target], w), target
        changed.add(target)
    assert len(changed) == 4
    for key, w in want.items():
        if key not in changed:
            assert torch.equal(got[key], w), key


def test_a_killed_lora_run_resumes_to_the_bytes_of_the_uninterrupted_one(setup, lora_run, tmp_path):
    from test_sft import kill_and_resume
    out = tmp_path / "run"
    resumed_at = kill_and_resume(lora_cmd(setup, out), out)
    assert json.loads((out / "run.json").read_text())["resumed_from_steps"] == [resumed_at]
    for name in ("steps/step4", "epoch1", "epoch2", "epoch3"):
        assert sha(out / name / "adapter_model.safetensors") == \
            sha(lora_run / name / "adapter_model.safetensors"), name
    assert read_steps(out) == read_steps(lora_run)


def test_what_a_lora_run_refuses_is_named(setup, tmp_path, monkeypatch):
    from ordermerge.sft import TrainError, load_run
    from ordermerge.workflow.config import ConfigError, load
    root, base, data, order_file, _ = setup
    bad = {**LORA, "adapter": {**ADAPTER, "target_modules": ["query"]}}
    with pytest.raises(TrainError, match=r"train.adapter.target_modules: 'query' is not a module "
                                         r"of the model \(its linear layers include: .*q_proj"):
        load_run("gsm8k", base, data, order_file, tmp_path / "a", bad, "sft", print)
    with pytest.raises(TrainError, match=r"train parameter adapter.kind: 'qlora' is not one of"):
        load_run("gsm8k", base, data, order_file, tmp_path / "b",
                 {**LORA, "adapter": {"kind": "qlora"}}, "sft", print)
    with pytest.raises(TrainError, match=r"train.adapter: LoRA runs are for decoder tasks; "
                                         r"glue_sst2 trains an encoder's head"):
        load_run("glue_sst2", base, data, order_file, tmp_path / "e", LORA, "sft", print)
    # a sharded launch: the run is refused before it trains
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "LlamaDecoderLayer")
    with pytest.raises(TrainError, match=r"train.adapter \(LoRA\) with a sharded \(FSDP2\) launch"):
        load_run("gsm8k", base, data, order_file, tmp_path / "c", LORA, "sft", print)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    # in the workflow: a task's own adapter makes its runs LoRA runs, not an encoder's, and
    # not where multi-task merging would align their checkpoints as full models
    layer = tmp_path / "lora.yaml"
    layer.write_text("tasks: {gsm8k: {train: {adapter: {kind: lora}}},"
                     " glue_sst2: {train: {adapter: {kind: lora}}}}\n")
    with pytest.raises(ConfigError) as e:
        load(layer)
    assert "config key tasks.glue_sst2.train.adapter: LoRA runs adapt a decoder" in str(e.value)
    assert "config key multitask.groups.tiny.tasks: 'gsm8k' trains LoRA runs" in str(e.value)
    layer.write_text("tasks: {gsm8k: {train: {adapter: {kind: lora}}}}\nmultitask: {groups: {tiny: null}}\n")
    assert load(layer)["tasks"]["gsm8k"]["train"]["adapter"] == {"kind": "lora"}
    # a sharded launch is refused before any job, naming the LoRA runs (sft.py would refuse
    # each run once started)
    monkeypatch.chdir(ROOT)
    layer.write_text("sft: {accelerate_config: config/accelerate/fsdp-7b-8gpu.yaml, num_processes: 8}\n")
    with pytest.raises(ConfigError, match=r"config key sft.accelerate_config: config/accelerate/"
                                          r"fsdp-7b-8gpu.yaml shards the model \(FSDP2\), and LoRA "
                                          r"runs \(lora \(agnews\)\) are not sharded"):
        load(layer)
    # the lora section: its name, tasks, adapter and train changes checked by key
    layer.write_text("lora: {name: tiny-llama, tasks: [gsm8k, glue_sst2, nope], adapter: {r: 0},"
                     " train: {lrr: 1}}\n")
    with pytest.raises(ConfigError) as e:
        load(layer)
    for said in ["config key lora.name: 'tiny-llama' is taken",
                 "config key lora.tasks: 'glue_sst2' is an encoder task",
                 "config key lora.tasks: 'nope' is not configured under tasks",
                 "config key lora.adapter.r: 0 is less than the minimum of 1",
                 "config key lora.train.lrr: unknown key"]:
        assert said in str(e.value), said


def test_two_processes_train_a_lora_run_on_the_same_rows_per_step(setup, lora_run, tmp_path):
    """DDP (accelerate launch, 2 CPU processes): the rows, rates and losses of each step are
    the one-process run's, and the float32 adapters agree within the drift of
    tests/test_fsdp_cpu.py's docstring (another reduction order of each step's gradient:
    test_sft.weight_drift) plus one float32 step."""
    from test_sft import STEP_TOKENS, launch, weight_drift
    from ulps import probable
    out = tmp_path / "run"
    proc = subprocess.run([*launch(2), str(SCRIPT), *lora_cmd(setup, out)], env=env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_steps(lora_run), read_steps(out)
    assert [(s["ids"], s["lr"]) for s in a] == [(s["ids"], s["lr"]) for s in b]
    assert [s["loss"] for s in b] == pytest.approx([s["loss"] for s in a],
                                                   rel=2 * probable(STEP_TOKENS))
    delta = weight_drift(lora_run, STEP_TOKENS)
    x = load_file(lora_run / "epoch3" / "adapter_model.safetensors")
    y = load_file(out / "epoch3" / "adapter_model.safetensors")
    assert sorted(x) == sorted(y)
    for k in x:
        room = delta + EPS32 * torch.maximum(x[k].abs(), y[k].abs())
        assert ((x[k] - y[k]).abs() <= room).all(), k


def test_the_adapters_defaults_are_the_ones_the_schema_describes():
    from ordermerge.lora import DEFAULTS, settings
    from ordermerge.schema import schema
    adapter = schema()["$defs"]["train"]["properties"]["adapter"]
    said = adapter["description"].split("defaults")[1]
    for key, value in DEFAULTS.items():
        shown = f"[{', '.join(value)}]" if isinstance(value, list) else f"{value:g}"
        assert f"{key} {shown}" in said, key
    assert set(DEFAULTS) | {"kind"} == set(adapter["properties"])
    assert settings({"kind": "lora", "r": 2}) == {**DEFAULTS, "kind": "lora", "r": 2}
