"""Progress lines of long jobs (SFT, evaluation) at a fixed interval of seconds, and the SFT
run's scalars to experiment trackers.

A progress line is printed when at least `every_s` seconds have passed since the previous
one (and once at the end): `progress: step 12/96 (12.5%), loss 1.2345, lr 2.5e-05, real
tokens/s 163, elapsed 0:03:12, eta 0:22:10`. Rates are over the interval since the previous
line; the ETA is the remaining units at the rate of this process so far. The logs' machine-
readable record stays steps.jsonl (SFT) and the records (evaluation): these lines are for
reading a running job's log.
"""
from __future__ import annotations

import math
import time

# how often a line is printed unless the config says (sft.progress_s)
EVERY_S = 60.0
# the SFT run's trackers unless the config names others (sft.trackers)
DEFAULT_TRACKERS = ("tensorboard",)
# the workflow hands the SFT jobs sft.trackers and sft.progress_s in this environment variable
# (JSON), not in their params: how a run reports changes none of its outputs, so changing it
# reruns nothing
MONITOR_ENV = "ORDERMERGE_SFT_MONITOR"
# the trackers accelerate writes the SFT scalars to (sft.trackers), and the module each needs
TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",),
            "mlflow": ("mlflow",)}


def hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """`total` units (steps, items) of work; `log` prints a line; `done` units were done
    before this process (a resumed run), `elapsed` seconds spent on them."""

    def __init__(self, total: int, log, *, every_s: float = EVERY_S, unit: str = "step",
                 done: int = 0, elapsed: float = 0.0, clock=time.monotonic):
        self.total, self.log, self.every, self.unit, self.clock = total, log, every_s, unit, clock
        self.t0 = clock() - elapsed
        self.first_done, self.first_t = done, clock()
        self.last_t, self.last_count = self.first_t, 0

    def update(self, done: int, *, count: int | None = None, count_name: str = "",
               **fields) -> bool:
        """Print a line if the interval has passed or the work is done. `count`: a running
        total (e.g. real tokens) whose rate over the interval is shown as `count_name`/s;
        `fields`: name -> value shown as given (floats with 4 significant digits)."""
        now = self.clock()
        if now - self.last_t < self.every and done < self.total:
            return False
        parts = [f"{self.unit} {done}/{self.total} ({100 * done / max(self.total, 1):.1f}%)"]
        parts += [f"{k.replace('_', ' ')} {v:.4g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                  for k, v in fields.items()]
        if count is not None:
            dt = now - self.last_t
            parts.append(f"{count_name}/s {(count - self.last_count) / dt:.0f}" if dt > 0
                         else f"{count_name}/s ?")
            self.last_count = count
        rate = (done - self.first_done) / (now - self.first_t) if now > self.first_t else 0.0
        eta = (self.total - done) / rate if rate > 0 else (0.0 if done >= self.total else math.inf)
        parts += [f"elapsed {hms(now - self.t0)}", f"eta {hms(eta)}"]
        self.log("progress: " + ", ".join(parts))
        self.last_t = now
        return True


def tracker_errors(trackers) -> list[str]:
    """What this machine lacks for the configured trackers (config time, before any job)."""
    import importlib.util
    out = []
    for t in trackers or []:
        mods = TRACKERS[t]
        if not any(importlib.util.find_spec(m) for m in mods):
            out.append(f"config key sft.trackers: {t!r} needs the package {mods[0]!r} "
                       f"(pip install {mods[0]}), which is not installed here")
    return out


def monitor_from_env() -> dict:
    """The SFT run's trackers and progress interval: the workflow's (MONITOR_ENV), else the
    defaults."""
    import json
    import os
    raw = os.environ.get(MONITOR_ENV)
    if not raw:
        return {"trackers": list(DEFAULT_TRACKERS), "progress_s": EVERY_S}
    try:
        m = json.loads(raw)
        assert set(m) == {"trackers", "progress_s"} and all(t in TRACKERS for t in m["trackers"])
        assert isinstance(m["progress_s"], (int, float)) and m["progress_s"] > 0
    except (ValueError, AssertionError, TypeError):
        raise ValueError(f"${MONITOR_ENV} = {raw!r}: not {{\"trackers\": [{', '.join(TRACKERS)}], "
                         f"\"progress_s\": seconds}}") from None
    return m
