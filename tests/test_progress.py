"""Progress lines at a fixed interval, the trackers' config check, and how the workflow
hands an SFT job its trackers and interval (its environment, not its params)."""
import pytest

from ordermerge.progress import Progress, hms, tracker_errors


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_line_at_the_interval_with_rates_and_eta():
    clock, lines = Clock(), []
    p = Progress(10, lines.append, every_s=30, clock=clock)
    clock.t += 10
    assert not p.update(1, loss=1.5, count=1000, count_name="real tokens")  # 10 s < 30 s
    clock.t += 20
    assert p.update(2, loss=1.25, lr="1e-04", count=3000, count_name="real tokens")
    # 3000 tokens in the 30 s since the start; 2 steps in 30 s: 8 left take 120 s
    assert lines == ["progress: step 2/10 (20.0%), loss 1.25, lr 1e-04, real tokens/s 100, "
                     "elapsed 0:00:30, eta 0:02:00"]
    clock.t += 5
    assert not p.update(3, count=3500, count_name="real tokens")
    clock.t += 25
    assert p.update(4, count=6000, count_name="real tokens")
    assert "real tokens/s 100," in lines[-1] and "eta 0:01:30" in lines[-1]  # 3000 in 30 s
    clock.t += 1
    assert p.update(10)  # the last unit always prints
    assert lines[-1].endswith("step 10/10 (100.0%), elapsed 0:01:01, eta 0:00:00")


def test_a_resumed_run_counts_its_earlier_time_but_not_its_rate():
    clock, lines = Clock(), []
    p = Progress(20, lines.append, every_s=1, unit="item", done=10, elapsed=600, clock=clock)
    clock.t += 50
    p.update(15)
    # elapsed includes the 600 s before the resume; 5 items in 50 s here: 5 left take 50 s
    assert lines == ["progress: item 15/20 (75.0%), elapsed 0:10:50, eta 0:00:50"]
    assert hms(float("inf")) == "?" and hms(3725.4) == "1:02:05"


def test_a_tracker_whose_package_is_missing_is_named(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("wandb",) else real(name, *a))
    assert tracker_errors(["tensorboard"]) == []
    (err,) = tracker_errors(["tensorboard", "wandb"])
    assert "sft.trackers" in err and "'wandb'" in err


def test_the_workflow_hands_the_monitor_to_sft_jobs_in_their_environment(monkeypatch):
    """sft.trackers and sft.progress_s reach the SFT jobs through progress.MONITOR_ENV, not
    their params: a run's params (Snakemake's rerun decision) are its train section alone."""
    import json
    from types import SimpleNamespace

    from ordermerge.progress import MONITOR_ENV, monitor_from_env
    from ordermerge.workflow.config import ConfigError, load
    from ordermerge.workflow.plan import Plan
    w = SimpleNamespace(model="tiny-llama", task="gsm8k", scheme="shuffle", run="0")
    plan = Plan(load())
    assert "monitor" not in plan.train_cfg(w)
    assert json.loads(plan.sft_monitor()) == {"trackers": ["tensorboard"], "progress_s": 60}
    layered = Plan(load_with({"sft": {"progress_s": 5, "trackers": []}}))
    monkeypatch.setenv(MONITOR_ENV, layered.sft_monitor())
    assert monitor_from_env() == {"trackers": [], "progress_s": 5}
    monkeypatch.delenv(MONITOR_ENV)
    assert monitor_from_env() == {"trackers": ["tensorboard"], "progress_s": 60.0}
    monkeypatch.setenv(MONITOR_ENV, '{"trackers": ["neptune"], "progress_s": 5}')
    with pytest.raises(ValueError, match=MONITOR_ENV):
        monitor_from_env()
    with pytest.raises(ConfigError, match="sft.trackers"):
        load_with({"sft": {"trackers": ["neptune"]}})


def load_with(layer: dict) -> dict:
    import tempfile
    from pathlib import Path

    import yaml

    from ordermerge.workflow.config import load
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "layer.yaml"
        f.write_text(yaml.safe_dump(layer))
        return load(f)
