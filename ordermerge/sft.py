"""One SFT run that follows a data order exactly, through accelerate, and resumes after a kill.

What it computes and writes (global batches of consecutive ids, micro-batches, the loss
over the global batch's response tokens, `steps.jsonl`, `samples.csv`, `run.json`) and how
it resumes (states under `resume/`, hard-linked checkpoints, the fingerprint) is described
once, in docs/pipeline.md (the SFT item, and "Micro-batches"). Reading order here:
`plan_steps` and `checkpoint_points` (what happens when), `Resume` (the saved states),
`SFTRun.run` (the loop), `_train_step` / `_accumulate` (one optimizer step), `load_run`
(from files).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import sharding as fsdp
from .layouts import layout_for
from .lora import is_adapter, save_adapter
from .schema import train_defaults, train_errors
from .progress import EVERY_S, Progress, monitor_from_env
from .provenance import now, write_record
from .objectives import objective_for, sample_losses
from .train import make_optimizer, micro_batches
from .utils import (InputError, OutputError, atomic_dir, atomic_file, check_output_dir,
                    derive_seed, lacks_record)

RESUME = "resume"


class TrainError(InputError):
    pass


@dataclass(frozen=True)
class Step:
    index: int  # optimizer steps before this one
    epoch: int  # 1-based
    start: int  # position of its first row in the epoch's order
    ids: tuple[str, ...]


@dataclass
class StepResult:
    """What one process did in one optimizer step."""
    records: list[dict]  # per row seen: id, epoch, step, position, loss
    real_tokens: int
    processed_tokens: int
    loss: float  # its rows' summed loss terms over the global batch's term count


def plan_steps(order: list[list[str]], batch_size: int) -> list[Step]:
    """The optimizer steps: each epoch's order cut every batch_size rows (the last short)."""
    steps = []
    for epoch, ids in enumerate(order, 1):
        for b in range(0, len(ids), batch_size):
            steps.append(Step(len(steps), epoch, b, tuple(ids[b:b + batch_size])))
    return steps


def checkpoint_points(steps: list[Step], save_steps: list[int]) -> dict[int, list[str]]:
    """Steps done -> the checkpoint directories written then (relative to the run's
    directory): epoch{e} at each epoch end, steps/step{N} after N optimizer steps for N in
    save_steps."""
    total = len(steps)
    bad = [n for n in save_steps if not 1 <= n <= total]
    if bad:
        raise TrainError(f"train.save_steps: {bad} outside 1..{total} (the run's optimizer steps)")
    points: dict[int, list[str]] = {}
    for s in steps:
        if s.index + 1 == total or steps[s.index + 1].epoch != s.epoch:
            points.setdefault(s.index + 1, []).append(f"epoch{s.epoch}")
    for n in sorted(set(save_steps)):
        points.setdefault(n, []).append(f"steps/step{n}")
    return points


def share(ids: tuple[str, ...], rank: int, world: int) -> tuple[str, ...]:
    """Process `rank`'s contiguous share of a global batch (ceil-sized; the last may be short
    or empty)."""
    per = math.ceil(len(ids) / world)
    return ids[rank * per:(rank + 1) * per]


def fingerprint(cfg: dict, order: list[list[str]], files: list[Path]) -> str:
    """What a saved state must match to be resumed: params, order and input files (name,
    size, mtime: the base is too large to hash on every start)."""
    h = hashlib.sha256(json.dumps({"cfg": cfg, "order": order}, sort_keys=True).encode())
    for f in map(Path, files):
        for p in sorted(f.rglob("*")) if f.is_dir() else [f]:
            if p.is_file():
                st = p.stat()
                rel = p.relative_to(f) if f.is_dir() else p.name
                h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _mixed_precision(cfg: dict) -> str:
    mp = cfg.get("mixed_precision", "auto")
    if mp == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return mp


def make_accelerator(cfg: dict, trackers=(), out_dir=None):
    """The run's processes, device, autocast and gathers, and the experiment trackers its
    scalars go to (`trackers`, writing under `out_dir`). Under an FSDP launch accelerate is
    not given the FSDP request: the run shards the model itself (sharding.py)."""
    from accelerate import Accelerator
    held = os.environ.pop(fsdp.ENV, None)
    try:
        return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=_mixed_precision(cfg),
                           log_with=list(trackers) or None,
                           project_dir=str(out_dir) if trackers else None)
    finally:
        if held is not None:
            os.environ[fsdp.ENV] = held


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (copy where links fail) every file of src into dst."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)


class Resume:
    """The resume states of one run under out_dir/resume/. A state is written by
    write(directory) and read by read(directory) on every process; by default accelerate's
    save_state and load_state (a sharded run passes its own)."""

    def __init__(self, out_dir: Path, fp: str, write=None, read=None):
        self.root = Path(out_dir) / RESUME
        self.fp = fp
        self.write, self.read = write, read

    def latest(self) -> Path | None:
        """The newest complete state with a matching fingerprint, else None."""
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        state = self.root / pointer.read_text().strip()
        progress = state / "progress.json"
        if not progress.is_file():
            return None
        try:
            if json.loads(progress.read_text()).get("fingerprint") != self.fp:
                return None
        except ValueError:
            return None
        return state

    def save(self, accelerator, steps_done: int, progress: dict) -> None:
        """The state written (all processes) into a temporary directory, renamed when
        complete; then `latest` points at it and older states go."""
        name = f"state-{steps_done:08d}"
        tmp = self.root / f".tmp-{name}"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            self.root.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        if self.write is None:
            accelerator.save_state(str(tmp), safe_serialization=True)
        else:
            self.write(tmp)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with atomic_file(tmp / "progress.json") as fh:
                json.dump({**progress, "fingerprint": self.fp}, fh)
            final = self.root / name
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            with atomic_file(self.root / "latest") as fh:
                fh.write(name + "\n")
            for old in self.root.glob("state-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def keep_checkpoint(self, path: Path) -> None:
        """A hard-linked copy of a written checkpoint (Snakemake deletes a failed job's
        outputs before re-running it)."""
        dst = self.root / "checkpoints" / path.name
        shutil.rmtree(dst, ignore_errors=True)
        _link_tree(path, dst)

    def restore_checkpoint(self, path: Path) -> bool:
        """Re-create a checkpoint deleted since it was written; False if none was kept."""
        src = self.root / "checkpoints" / path.name
        if path.is_dir():
            return True
        if not src.is_dir():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(path) as tmp:
            tmp.rmdir()
            _link_tree(src, tmp)
        return True

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def begin(self, accelerator, points: dict[int, list[str]], seed: int, log) -> dict:
        """The progress to start from: the newest matching state, loaded into every process
        and with its deleted checkpoints re-created; else a fresh start, every process seeded
        from `seed`. Temporary directories of writes a kill interrupted go either way."""
        acc, out_dir = accelerator, self.root.parent
        if acc.is_main_process:
            (out_dir / "steps").mkdir(parents=True, exist_ok=True)  # the rule's output
            for d in (out_dir, out_dir / "steps", self.root):
                for tmp in list(d.glob(".*.tmp-*")) + list(d.glob(".tmp-state-*")):
                    shutil.rmtree(tmp, ignore_errors=True)
        state = self.latest()
        if state is None:
            from accelerate.utils import set_seed
            set_seed((seed + acc.process_index) % 2**32)  # numpy takes 32-bit seeds
            if acc.is_main_process:
                self.clear()  # states of other inputs, or a partial first save
            return {"steps_done": 0, "records": [], "step_log": [], "history": [],
                    "real_tokens": 0, "processed_tokens": 0, "wall_s": 0.0, "resumed_from": []}
        if self.read is None:
            acc.load_state(str(state))
        else:
            self.read(state)
        progress = json.loads((state / "progress.json").read_text())
        done = progress["steps_done"]
        progress["resumed_from"] = progress.get("resumed_from", []) + [done]
        log(f"resuming from {state} after {done} steps")
        if acc.is_main_process:
            for name in (x for n, names in points.items() if n <= done for x in names):
                if not self.restore_checkpoint(out_dir / name):
                    raise TrainError(f"{self.root}: state after step {done} but no copy of {name}")
        acc.wait_for_everyone()
        return progress


class SFTRun:
    """See the module docstring. `cfg` is the task's train section of the config."""

    def __init__(self, model, tokenizer, *, train_rows, validation_rows, task, order, cfg,
                 save_dtype, out_dir, provenance, log, fingerprint_files=(), accelerator=None,
                 objective=None, seed: int = 0, sharding: fsdp.Sharding | None = None,
                 monitor: dict | None = None):
        """sharding: FSDP2 units and strategy (sharding.py); default what the launch asks
        for (an FSDP accelerate config), else None: the whole model on each process (DDP
        when there are several). monitor: {"trackers": accelerate trackers the scalars go to
        (default none; the workflow's default is tensorboard, written to out_dir/tensorboard),
        "progress_s": seconds between progress lines (progress.EVERY_S)}."""
        self.cfg, self.log, self.provenance = cfg, log, provenance
        self.out_dir = Path(out_dir)
        self.tokenizer, self.save_dtype = tokenizer, save_dtype
        monitor = monitor or {}
        self.trackers = list(monitor.get("trackers") or [])
        self.progress_s = monitor.get("progress_s", EVERY_S)
        if accelerator is not None and self.trackers:
            raise TrainError("monitor trackers are set up with the run's own accelerator")
        self.acc = accelerator or make_accelerator(cfg, self.trackers, self.out_dir)
        # one process, DDP or FSDP2: what differs between them (layouts.py)
        self.layout = layout_for(self.acc, fsdp.requested() if sharding is None else sharding)
        self.B, self.mB = cfg["batch_size"], cfg["micro_batch_size"]
        self.micro_tokens = cfg.get("micro_batch_tokens")
        errors = train_errors(cfg, "train")
        if errors:
            raise TrainError("; ".join(errors))

        # what is optimised: the causal LM on targets, or an encoder head (objectives.py)
        self.obj = objective or objective_for(task, tokenizer, cfg["max_length"])

        def encode(rows):
            return {r["id"]: self.obj.encode(r) for r in rows}
        self.examples, self.val_examples = encode(train_rows), encode(validation_rows)
        unknown = [i for epoch in order for i in epoch if i not in self.examples]
        if unknown:
            raise TrainError(f"order names {len(unknown)} ids absent from the training rows, "
                             f"e.g. {unknown[:3]}")
        self.order = order
        self.steps = plan_steps(order, self.B)
        self.points = checkpoint_points(self.steps, cfg.get("save_steps", []))
        bad = [n for n in cfg.get("eval_steps", []) if not 1 <= n <= len(self.steps)]
        if bad:
            raise TrainError(f"train.eval_steps: {bad} outside 1..{len(self.steps)}")
        self.eval_at = set(cfg.get("eval_steps", [])) | {n for n, names in self.points.items()
                                                          if any(x.startswith("epoch") for x in names)}
        # a state is resumed by a run of the same layout only
        identity = self.layout.identity()
        layout = cfg if identity is None else {**cfg, "sharding": identity}
        self.resume = Resume(self.out_dir, fingerprint(layout, order, list(fingerprint_files)),
                             **self.layout.state_io(self))
        # dropout (BERT) and anything else random draws from these generators; a fresh run
        # seeds them, a resumed run gets them back from its state
        self.seed = seed

        if cfg.get("gradient_checkpointing"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if is_adapter(model) and self.layout.identity() is not None:
            raise TrainError("train.adapter (LoRA) with a sharded (FSDP2) launch: not supported; "
                             "train LoRA runs in one process or with DDP")
        model = self.layout.place(model)
        opt, self.sched = make_optimizer(model, cfg, len(self.steps), fused=torch.cuda.is_available())
        self.model, self.opt = self.layout.prepare(model, opt)
        self.layout.register(self.sched)

    # ------------------------------------------------------------------ pieces

    def _n_target(self, ids) -> int:
        return sum(self.examples[i]["n_target"] for i in ids)

    def _train_step(self, step: Step) -> StepResult:
        """Forward/backward of this process's share, then the optimizer step."""
        out = self._accumulate(step)
        if self.cfg["max_grad_norm"]:
            self.layout.clip(self.model, self.cfg["max_grad_norm"])
        self.lr = self.sched.get_last_lr()[0]  # the rate this step uses
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return out

    def _accumulate(self, step: Step) -> StepResult:
        """Forward/backward of this process's share of the step's rows, micro-batch by
        micro-batch; the gradients are synchronised over processes on the last one."""
        acc, model = self.acc, self.model
        mine = share(step.ids, acc.process_index, acc.num_processes)
        offset = step.start + acc.process_index * math.ceil(len(step.ids) / acc.num_processes)
        n_target = self._n_target(step.ids)
        scale = acc.num_processes / max(n_target, 1)  # DDP averages gradients over processes
        def cut_of(ids):
            return micro_batches([len(self.examples[i]["input_ids"]) for i in ids], self.mB,
                                 self.micro_tokens) or [[]]
        cut = cut_of(mine)
        # empty micro-batches up to the forwards the layout runs (sharded: the most of any process)
        most = self.layout.forwards(len(cut), lambda r: len(cut_of(share(step.ids, r, acc.num_processes))))
        cut += [[]] * (most - len(cut))
        records, real, processed, loss_sum = [], 0, 0, 0.0
        for k, idx in enumerate(cut):
            rows = [mine[j] for j in idx]
            empty = len(rows) == 0  # still takes part in the gradient all-reduce
            batch = self.obj.collate([self.examples[i] for i in (rows or step.ids[:1])])
            batch = {key: v.to(acc.device) for key, v in batch.items()}
            with self.layout.sync(model, last=k == len(cut) - 1):
                with acc.autocast():
                    total, count = self.obj.losses(model, batch)
                loss = total.sum() * (0.0 if empty else scale)
                acc.backward(loss)
            if empty:
                continue
            real += int(batch["attention_mask"].sum())
            processed += batch["input_ids"].numel()
            loss_sum += float(total.detach().sum())
            for j, i, t, c in zip(idx, rows, total.tolist(), count.tolist()):
                records.append({"id": i, "epoch": step.epoch, "step": step.index,
                                "position": offset + j, "loss": t / max(c, 1)})
        return StepResult(records, real, processed, loss_sum / max(n_target, 1))

    @torch.no_grad()
    def losses(self, examples: dict[str, dict]) -> dict[str, float]:
        """Mean response-token loss per sample (eval mode), shared out over the processes."""
        from accelerate.utils import gather_object

        self.model.eval()
        mine = share(tuple(examples), self.acc.process_index, self.acc.num_processes)
        out = sample_losses(self.model, self.obj, examples, mine, self.mB, self.acc.device,
                            self.acc.autocast)
        # one-row forwards up to the forwards the layout runs (sharded: the most of any process)
        most = self.layout.forwards(len(mine),
                                    lambda r: len(share(tuple(examples), r, self.acc.num_processes)))
        extra = -(-most // self.mB) - -(-len(mine) // self.mB)
        some = [next(iter(examples))] if examples else []
        for _ in range(extra if some else 0):
            sample_losses(self.model, self.obj, examples, some, 1, self.acc.device,
                          self.acc.autocast)
        self.model.train()
        merged = {}
        for part in gather_object([out]):
            merged.update(part)
        return merged

    def _save_checkpoint(self, name: str, start: str) -> None:
        from .models import save_model
        acc = self.acc
        state = self.layout.state_dict(self.model)  # every process takes part
        if acc.is_main_process:
            final = self.out_dir / name
            # a checkpoint of this run (its provenance.json) may be replaced, nothing else
            check_output_dir(final, what="checkpoint", previous=not_a_checkpoint)
            with atomic_dir(final) as tmp:
                model = acc.unwrap_model(self.model)
                if is_adapter(model):  # a LoRA run's checkpoint is its adapter (lora.py)
                    save_adapter(model, self.tokenizer, tmp)
                else:
                    save_model(model, self.tokenizer, tmp, self.save_dtype, state_dict=state)
                write_record(tmp, final=final, start=start,
                             **{**self.provenance, "derived": {**self.provenance.get("derived", {}),
                                                               "checkpoint": name}})
            self.resume.keep_checkpoint(final)
        acc.wait_for_everyone()

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        """Train from the newest state (or the start) to the end; returns the summary on the
        main process."""
        start = now()
        progress = self.resume.begin(self.acc, self.points, self.seed, self.log)
        self.model.train()
        t0 = time.perf_counter() - progress["wall_s"]
        if self.trackers:  # scalars beside steps.jsonl (out_dir/tensorboard for TensorBoard)
            self.acc.init_trackers(TRACKER_DIR)
        lines = Progress(len(self.steps), self.log, every_s=self.progress_s,
                         done=progress["steps_done"], elapsed=progress["wall_s"])
        for step in self.steps[progress["steps_done"]:]:
            self._log_step(progress, step, self._train_step(step))
            done = step.index + 1
            last = progress["step_log"][-1]
            lines.update(done, epoch=step.epoch, loss=last["loss"], lr=f"{last['lr']:.3g}",
                         count=progress["real_tokens"], count_name="real tokens")
            if self.trackers:
                self.acc.log({"train/loss": last["loss"], "train/lr": last["lr"],
                              "train/real_tokens": progress["real_tokens"]}, step=done)
            if done in self.eval_at:
                self._validate(progress, step)
            if done in self.points:
                for name in self.points[done]:
                    self._save_checkpoint(name, start)
                progress["steps_done"] = done
                progress["wall_s"] = time.perf_counter() - t0
                # no state after the last step: the run ends within seconds (its logs, then
                # clear()), and the state would be the largest write of the run (weights,
                # optimizer moments: 12 bytes a parameter, 84 GB for a 7B model) only to be
                # deleted; a run killed in those seconds resumes from the state before and
                # trains the last stretch again, to the same bytes
                if done < len(self.steps):
                    self.resume.save(self.acc, done, progress)
        wall = time.perf_counter() - t0
        # the trackers' files are flushed and closed here; not through acc.end_training(),
        # which also destroys the process group that the barrier below still needs
        for tracker in self.acc.trackers:
            tracker.finish()
        summary = None
        if self.acc.is_main_process:
            summary = self._write_logs(progress, wall, start)
            self.resume.clear()
        self.acc.wait_for_everyone()
        return summary

    def _log_step(self, progress: dict, step: Step, mine: StepResult) -> None:
        """Gather every process's result of `step` into `progress`."""
        from accelerate.utils import gather_object
        parts = gather_object([mine])
        records = sorted((r for p in parts for r in p.records), key=lambda r: r["position"])
        progress["records"] += records
        progress["real_tokens"] += sum(p.real_tokens for p in parts)
        progress["processed_tokens"] += sum(p.processed_tokens for p in parts)
        progress["step_log"].append({
            "step": step.index + 1, "epoch": step.epoch, "ids": [r["id"] for r in records],
            "loss": sum(p.loss for p in parts), "lr": self.lr})

    def _validate(self, progress: dict, step: Step) -> None:
        val = self.losses(self.val_examples)
        v = sum(val.values()) / max(len(val), 1)
        progress["history"].append({"step": step.index + 1, "epoch": step.epoch,
                                    "validation_loss": v})
        self.log(f"epoch {step.epoch} step {step.index + 1} validation loss {v:.4f}")
        if self.trackers:
            self.acc.log({"validation/loss": v}, step=step.index + 1)

    def _write_logs(self, progress: dict, wall: float, start: str) -> dict:
        # each sample's loss when its step trained on it; its loss after training is the
        # `score` rule's (any checkpoint, scoring.py), so that scoring code never retrains
        with atomic_file(self.out_dir / "samples.csv", "w") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["id", "epoch", "position", "step", "loss_seen"])
            for r in sorted(progress["records"], key=lambda r: (r["epoch"], r["position"])):
                w.writerow([r["id"], r["epoch"], r["position"], r["step"], f"{r['loss']:.6f}"])
        with atomic_file(self.out_dir / "steps.jsonl", "w") as fh:
            for s in progress["step_log"]:
                fh.write(json.dumps(s) + "\n")
        summary = {
            "steps": len(self.steps), "epochs": len(self.order), "wall_s": wall,
            "tokens_per_s": progress["real_tokens"] / wall if wall else None,
            "real_tokens": progress["real_tokens"], "processed_tokens": progress["processed_tokens"],
            # real / processed: the share of the forward passes' tokens that were not padding
            "padding_efficiency": progress["real_tokens"] / max(progress["processed_tokens"], 1),
            "micro_batch_tokens": self.micro_tokens,
            "truncated_rows": sum(e["truncated"] for e in self.examples.values()),
            "history": progress["history"], "checkpoints": self.points,
            "processes": self.acc.num_processes, "mixed_precision": _mixed_precision(self.cfg),
            "sharding": self.layout.summary(),
            "resumed_from_steps": progress["resumed_from"],
        }
        with atomic_file(self.out_dir / "run.json") as fh:
            json.dump(summary, fh, indent=2, sort_keys=True)
        for name in ("samples.csv", "steps.jsonl", "run.json"):
            write_record(self.out_dir / name, start=start, **self.provenance)
        return summary


def train_from_args(args, params: dict, rule: str, log) -> dict | None:
    """One SFT run from the parsed `add_arguments`; returns the summary on the main process."""
    run = load_run(args.task, args.base, args.data_dir, args.order, args.out_dir, params, rule, log)
    summary = run.run()
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        # every process past its last collective, then the group torn down here: left to
        # interpreter exit, gloo's threads can abort a finished run ("terminate called
        # without an active exception", seen once in CI on a loaded 2-core machine)
        dist.barrier()
        dist.destroy_process_group()
    if summary is not None:
        last = summary["history"][-1]["validation_loss"] if summary["history"] else None
        log(f"done: {summary['steps']} steps, {summary['tokens_per_s']:.0f} tokens/s"
            + (f", last validation loss {last:.4f}" if last is not None else ""))
    return summary


# the run's logs in its output directory, each beside its provenance record
RUN_LOGS = ("samples.csv", "steps.jsonl", "run.json")
# the TensorBoard event files of the run's scalars (accelerate's tracker; steps.jsonl is the
# record, these are for watching)
TRACKER_DIR = "tensorboard"


def not_a_run_dir(path: Path) -> str | None:
    """Why the existing directory `path` is not one a run may write into (None: it may): it
    must be empty or hold only what a run writes -- its logs with their provenance records,
    its checkpoints (epochN/, steps/; load_run checks each), its resume state (resume/) and
    the temporary paths of its own writes. A user's file there is never overwritten."""
    from .provenance import SIDECAR_SUFFIX
    for entry in sorted(path.iterdir()):
        name = entry.name
        if name in RUN_LOGS:
            why = lacks_record(path, name + SIDECAR_SUFFIX, "rule")
            if why:
                return f"it holds {name}, not a run's ({why})"
        elif name.endswith(SIDECAR_SUFFIX) and name[:-len(SIDECAR_SUFFIX)] in RUN_LOGS:
            why = lacks_record(path, name, "rule")
            if why:
                return f"it holds {name}, not a run's record ({why})"
        elif entry.is_dir() and not entry.is_symlink() and (
                name in ("steps", RESUME, TRACKER_DIR) or re.fullmatch(r"epoch\d+", name)):
            continue
        elif not (name.startswith(".") and ".tmp-" in name):  # a killed write's (Resume.begin)
            return f"it holds {name!r}, which a run does not write"
    return None


def not_a_checkpoint(path: Path) -> str | None:
    """Why the directory `path` is not a checkpoint a run wrote (None: it is one, by its
    provenance record); only those are replaced."""
    return lacks_record(path, "provenance.json", "rule")


def _first_repeat(items):
    """The first item seen twice, or None."""
    seen = set()
    for x in items:
        if x in seen:
            return x
        seen.add(x)
    return None


def load_run(task_name: str, base, data_dir, order_file, out_dir, params: dict, rule: str,
             log) -> SFTRun:
    """An SFTRun of `task_name` from the files it needs: the base model's directory (or hub
    id), the prepared data directory (train.jsonl, validation.jsonl) and the order file; each
    is checked and named when it is wrong. `params` is the task's train section (the schema's
    defaults fill what it omits)."""
    from .data.registry import get_task
    from .models import load_pretrained_source, stored_dtype
    from .utils import read_jsonl

    # how the run reports (the workflow's sft.trackers and sft.progress_s): not a train setting
    try:
        monitor = monitor_from_env()
    except ValueError as e:
        raise TrainError(str(e)) from None
    defaults = train_defaults()
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise TrainError(f"train parameter {unknown[0]!r} is unknown (known: {', '.join(defaults)})")
    from .schema import schema, schema_errors
    full = schema()
    errors = schema_errors(params, {**full["$defs"]["train"], "$defs": full["$defs"]})
    if errors:  # a type or range the train section does not allow, named by its key
        raise TrainError(errors[0].replace("config key ", "train parameter ", 1))
    cfg = {**defaults, **params}
    files = {split: Path(data_dir) / f"{split}.jsonl" for split in ("train", "validation")}
    for split, f in files.items():
        if not f.is_file():
            raise TrainError(f"data directory {data_dir}: no {f.name} ({split} rows)")
    if not Path(order_file).is_file():
        raise TrainError(f"order file {order_file}: no such file")
    try:
        order = json.loads(Path(order_file).read_text())
        epochs = order["epochs"]
        assert isinstance(epochs, list) and all(isinstance(e, list) for e in epochs)
        assert all(isinstance(i, str) for e in epochs for i in e)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise TrainError(f"order file {order_file}: not an order file (a JSON object with "
                         f"'epochs': a list of lists of row ids)") from None
    if not epochs or any(not e for e in epochs):
        empty = next((i + 1 for i, e in enumerate(epochs) if not e), None)
        raise TrainError(f"order file {order_file}: " + (f"epoch {empty} has no rows" if empty
                         else "no epochs") + ": there is nothing to train on")
    for key in ("seed", "run"):  # they seed the run: a string would be hashed as text
        v = order.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool):
            raise TrainError(f"order file {order_file}: {key!r} is {v!r}, not an integer")
    for n, epoch in enumerate(epochs, 1):  # an order is a permutation: a row twice is a typo
        twice = _first_repeat(epoch)
        if twice is not None:
            raise TrainError(f"order file {order_file}: epoch {n} names row {twice!r} twice")
    try:
        task = get_task(task_name)
    except KeyError as e:
        raise TrainError(e.args[0]) from None
    if cfg["adapter"] is not None and task.family != "decoder":
        raise TrainError(f"train.adapter: LoRA runs are for decoder tasks; {task_name} trains "
                         f"an encoder's head")
    # where the run writes: a new or empty directory, or an earlier run's (nothing else's
    # files are overwritten), never the current directory, one above it or an input's
    try:
        out = check_output_dir(out_dir, what="--out-dir", previous=not_a_run_dir,
                               earlier="an earlier run's output", act="train into",
                               inputs=[p for p in (base, data_dir, order_file) if Path(p).exists()])
    except OutputError as e:
        raise TrainError(str(e)) from None
    for ck in [*out.glob("epoch*"), *out.glob("steps/step*")]:  # before any training
        why = not_a_checkpoint(ck) if ck.is_dir() else None
        if why:
            raise TrainError(f"{ck} exists and is not a checkpoint of a run ({why}): "
                             "refusing to replace it")
    # every row has the task's fields (a row of another task's data, or one missing a field,
    # ended in a KeyError inside the run), before a model is loaded
    from .data.task import check_rows
    rows = {}
    for split, f in files.items():
        rows[split] = read_jsonl(f)
        try:
            check_rows(task, rows[split], str(f))  # validation rows are train rows held out
        except ValueError as e:
            raise TrainError(str(e)) from None
        twice = _first_repeat(r.get("id") for r in rows[split])
        if twice is not None:  # rows are looked up by id: the second copy would be dropped
            raise TrainError(f"{f}: row id {twice!r} appears twice")
    if not rows["validation"]:  # its loss would be the mean of nothing, written as 0.0
        raise TrainError(f"{files['validation']}: no rows: the validation loss needs at least one")
    if task.family == "encoder":
        # the base encoder with the task's head, initialised alike in every run of the task
        from transformers import AutoTokenizer

        from .encoder import load_with_head
        if not Path(base).is_dir():
            raise TrainError(f"base {base}: an encoder task needs the encoder's directory")
        model = load_with_head(task, base, derive_seed(order.get("seed", 0), "encoder-head"))
        tokenizer = AutoTokenizer.from_pretrained(base)
    else:
        # fp32 master weights; checkpoints go back to the base's dtype (fails fast offline)
        model, tokenizer = load_pretrained_source(str(base), "float32", "base")
    if cfg["adapter"] is not None:  # LoRA: every run of the task starts from the same adapters
        from .lora import wrap
        try:
            model = wrap(model, cfg["adapter"], derive_seed(order.get("seed", 0), task_name, "lora"))
        except InputError as e:
            raise TrainError(str(e)) from None
    return SFTRun(model, tokenizer, train_rows=rows["train"],
                  validation_rows=rows["validation"], task=task,
                  order=epochs, cfg=cfg, save_dtype=stored_dtype(base), out_dir=out_dir,
                  provenance={"rule": rule, "params": params,
                              "derived": {"defaults": {k: v for k, v in cfg.items() if k not in params}},
                              "seeds": {"order_seed": order.get("seed"), "run": order.get("run")},
                              "inputs": [base, files["train"], files["validation"], order_file]},
                  log=log, fingerprint_files=[base, files["train"], files["validation"]],
                  seed=derive_seed(order.get("seed", 0), task_name, "sft", order.get("run", 0)),
                  monitor=monitor)
