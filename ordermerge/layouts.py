"""How an SFT run lays the model out over its processes, one object per layout behind one
interface (``Layout``): the whole model in one process, the whole model on each of several
processes with its gradients averaged (DDP, through accelerate), or the model sharded over
the processes (FSDP2, sharding.py). ``SFTRun`` (sft.py) asks its layout, never which one it
has, for what differs between them:

- ``place`` and ``prepare``: the model as the layout holds it (before the optimizer is
  made), then the model and the optimizer as the layout trains them;
- ``sync``: the context of one micro-batch's backward (gradients synchronised on the step's
  last micro-batch only);
- ``forwards``: how many forwards a process runs for its share (a sharded
  model's forward gathers from every process, so each runs as many as the one with the
  most);
- ``clip``: the gradient norm clipping (over all shards where sharded);
- ``state_dict``: the full state dict of a checkpoint (every process takes part);
- the resume state: its fingerprint's part (``identity``) and how it is written and read
  (``state_io``);
- ``summary``: what run.json says of it.
"""
from __future__ import annotations

import contextlib

from . import sharding as fsdp


class Layout:
    """The whole model in one process."""

    name = "one process"

    def __init__(self, acc):
        self.acc = acc

    def identity(self) -> list | None:
        """What the resume state's fingerprint adds for this layout (None: nothing): a state
        is resumed only by a run of the same layout."""
        return None

    def place(self, model):
        """The model as this layout holds it, before the optimizer sees its parameters."""
        return model

    def prepare(self, model, opt):
        """The model and optimizer as trained (the scheduler is not prepared: accelerate
        would step it once per process)."""
        return self.acc.prepare(model, opt)

    def register(self, sched) -> None:
        """What accelerate's resume state holds besides the model and optimizer."""
        self.acc.register_for_checkpointing(sched)

    def forwards(self, own: int, n_of_rank) -> int:
        """The forwards this process runs when its share needs `own` and process r's needs
        n_of_rank(r): its own (the sharded layout: the most of any process)."""
        return own

    def sync(self, model, last: bool):
        """The context of a micro-batch's forward and backward; `last`: the step's last."""
        return contextlib.nullcontext()

    def clip(self, model, max_norm: float) -> None:
        self.acc.clip_grad_norm_(model.parameters(), max_norm)

    def state_dict(self, model) -> dict:
        return self.acc.get_state_dict(model)

    def state_io(self, run) -> dict:
        """Resume's write/read of the state (default: accelerate's save_state/load_state)."""
        return {}

    def summary(self) -> dict | None:
        return None


class DDP(Layout):
    """The whole model on each of several processes, gradients averaged over them."""

    name = "DDP"

    def sync(self, model, last: bool):
        return contextlib.nullcontext() if last else self.acc.no_sync(model)


class FSDP2(Layout):
    """The model sharded over the processes by torch's fully_shard (sharding.py)."""

    name = "FSDP2"

    def __init__(self, acc, sharding: fsdp.Sharding):
        super().__init__(acc)
        self.sharding = sharding
        self.sizes: dict = {}

    def identity(self) -> list:
        s = self.sharding
        return [list(s.units), s.reshard_after_forward, self.acc.num_processes]

    def prepare(self, model, opt):
        # not through accelerate: it would wrap the sharded model in DDP
        return model, opt

    def place(self, model):
        """The model sharded, before the optimizer sees its parameters."""
        model = fsdp.shard(model, self.sharding, self.acc.device)
        self.sizes = {"units": self.sharding.units_of(model),
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "parameters_on_main": sum(p.to_local().numel() for p in model.parameters())}
        return model

    def register(self, sched) -> None:
        """The scheduler's position is in the sharded state (sharding.save_state)."""

    def forwards(self, own: int, n_of_rank) -> int:
        return max(n_of_rank(r) for r in range(self.acc.num_processes))

    def sync(self, model, last: bool):
        model.set_requires_gradient_sync(last)  # gradients reduce-scattered on the last only
        return contextlib.nullcontext()

    def clip(self, model, max_norm: float) -> None:
        import torch
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # the norm over all shards

    def state_dict(self, model) -> dict:
        return fsdp.full_state_dict(model)

    def state_io(self, run) -> dict:
        """A state of this layout only, written in shards."""
        return {"write": lambda d: fsdp.save_state(d, run.model, run.opt, run.sched,
                                                   self.acc.process_index),
                "read": lambda d: fsdp.load_state(d, run.model, run.opt, run.sched,
                                                  self.acc.process_index)}

    def summary(self) -> dict:
        return {"strategy": self.sharding.strategy, **self.sizes}


def layout_for(acc, sharding: fsdp.Sharding | None) -> Layout:
    """The layout of a run: sharded where `sharding` is given, else DDP over several
    processes, else one process."""
    if sharding is not None:
        return FSDP2(acc, sharding)
    return DDP(acc) if acc.num_processes > 1 else Layout(acc)
