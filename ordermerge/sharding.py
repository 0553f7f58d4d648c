"""Fully sharded SFT (FSDP2): what an FSDP accelerate config asks of one SFT run.

`accelerate launch --config_file <an FSDP config>` exports ACCELERATE_USE_FSDP=true and the
config's fsdp_config as FSDP_* variables. ordermerge shards the model itself with torch's
`fully_shard` rather than through accelerate's wrappers, for one reason: accelerate 1.15
with an FSDP plugin on CPU processes silently makes a DDP run (tests/test_fsdp_cpu.py), so
its sharded path could not run anywhere but on GPUs. This one runs the same on 2 CPU
processes (gloo) in the test suite and on GPUs (NCCL). Accelerate still starts the
processes and gives the device, autocast and gathers.

What the sharded run does (docs/slurm.md, the sharded runs):
- one FSDP unit per module of the FSDP_TRANSFORMER_CLS_TO_WRAP class (the decoder layers),
  and the root (embeddings, final norm, output head) as the last unit; full shard (the
  parameters, gradients and AdamW states split over the processes), or SHARD_GRAD_OP (the
  parameters stay gathered between forward and backward);
- fp32 parameters, gradients and optimizer states; mixed precision is the same autocast as
  the unsharded run's, so both compute the same thing;
- resume states sharded: torch.distributed.checkpoint writes each process's shards of the
  weights and optimizer states; each process also writes its random states and the
  schedule's position;
- checkpoints: the full state dict gathered (all processes take part) and saved by the main
  process in the base's dtype, as an unsharded run saves it.
Settings it cannot honour are refused by name, never ignored.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from .utils import InputError

ENV = "ACCELERATE_USE_FSDP"
STRATEGIES = {"FULL_SHARD": True, "SHARD_GRAD_OP": False}  # -> reshard after forward
DEFAULT_UNIT = "LlamaDecoderLayer"
SHARDS = "shards"  # the resume state's subdirectory of weight and optimizer shards


class ShardingError(InputError):
    pass


@dataclass(frozen=True)
class Sharding:
    units: tuple[str, ...]  # class names of the modules made one FSDP unit each
    reshard_after_forward: bool

    @property
    def strategy(self) -> str:
        return next(k for k, v in STRATEGIES.items() if v == self.reshard_after_forward)

    @staticmethod
    def units_of(model) -> int:
        """How many FSDP units the sharded `model` has (the root counts as one)."""
        from torch.distributed.fsdp import FSDPModule
        return sum(isinstance(m, FSDPModule) for m in model.modules())


TRUE = {"true", "1", "yes"}  # how a launch's variables say yes


def _flag(environ, key: str) -> bool:
    return str(environ.get(key, "false")).strip().lower() in TRUE


# settings of an accelerate fsdp_config this path does not do: variable -> (refused
# values, why); a value not refused is honoured (the unit class, the strategy) or makes no
# difference to FSDP2 (fsdp_use_orig_params, fsdp_sync_module_states: every process loads
# the same base)
REFUSED = {
    "FSDP_OFFLOAD_PARAMS": (TRUE, "CPU offload of parameters is not supported"),
    "FSDP_ACTIVATION_CHECKPOINTING": (TRUE,
                                      "set train.gradient_checkpointing instead"),
    "FSDP_CPU_RAM_EFFICIENT_LOADING": (TRUE,
                                       "every process loads the whole base into CPU memory, "
                                       "then keeps its shard"),
    "FSDP_STATE_DICT_TYPE": ({"FULL_STATE_DICT", "LOCAL_STATE_DICT"},
                             "resume states are sharded (SHARDED_STATE_DICT); checkpoints "
                             "are gathered whole anyway"),
    "FSDP_BACKWARD_PREFETCH": ({"NO_PREFETCH", "BACKWARD_POST"},
                               "FSDP2 prefetches the next unit's gather in backward "
                               "(BACKWARD_PRE)"),
}
# accelerate's names of the variables, where not FSDP_ + the config key's upper case
VARIABLE_OF_KEY = {"fsdp_transformer_layer_cls_to_wrap": "FSDP_TRANSFORMER_CLS_TO_WRAP"}


def _key(variable: str) -> str:
    """The fsdp_config key accelerate sets `variable` from."""
    inverse = {v: k for k, v in VARIABLE_OF_KEY.items()}
    return inverse.get(variable, "fsdp_" + variable.removeprefix("FSDP_").lower())


def requested(environ=None) -> Sharding | None:
    """The sharding the launch asks for (None: not an FSDP launch); refuses what this path
    does not do, naming the accelerate config key."""
    environ = os.environ if environ is None else environ
    if not _flag(environ, ENV):
        return None

    def refuse(variable: str, value, why: str):
        raise ShardingError(f"accelerate config fsdp_config.{_key(variable)}: {value!r} is not "
                            f"supported by ordermerge's sharded SFT ({why})")
    for variable, (values, why) in REFUSED.items():
        value = str(environ.get(variable, "")).strip()
        if value.upper() in {v.upper() for v in values}:
            refuse(variable, value, why)
    strategy = str(environ.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD")).strip().upper()
    numbered = {"1": "FULL_SHARD", "2": "SHARD_GRAD_OP"}  # accelerate's older numeric form
    strategy = numbered.get(strategy, strategy)
    if strategy not in STRATEGIES:
        refuse("FSDP_SHARDING_STRATEGY", strategy, f"one of {', '.join(STRATEGIES)}")
    policy = str(environ.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")).strip().upper()
    if policy != "TRANSFORMER_BASED_WRAP":
        refuse("FSDP_AUTO_WRAP_POLICY", policy,
               "TRANSFORMER_BASED_WRAP: one unit per decoder layer")
    units = tuple(u.strip() for u in str(environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP")
                                         or DEFAULT_UNIT).split(",") if u.strip())
    return Sharding(units, STRATEGIES[strategy])


def from_accelerate_config(acc: dict) -> Sharding | None:
    """requested() of what `accelerate launch --config_file` exports for the parsed config
    `acc` (None unless its distributed_type is FSDP): the config check runs it before any
    job."""
    if acc.get("distributed_type") != "FSDP":
        return None
    environ = {ENV: "true"}
    for key, value in (acc.get("fsdp_config") or {}).items():
        variable = VARIABLE_OF_KEY.get(key, "FSDP_" + key.removeprefix("fsdp_").upper())
        environ[variable] = str(value).lower() if isinstance(value, bool) else str(value)
    return requested(environ)


def shard(model, sharding: Sharding, device):
    """fully_shard each unit, then the root, over all processes; the model is changed in
    place (its class becomes FSDP's subclass of it) and returned."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise ShardingError("a sharded SFT run needs a process group: start it with "
                            "accelerate launch (sft.accelerate_config)")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    units = [m for m in model.modules() if type(m).__name__ in sharding.units]
    if not units:  # (the root alone would be one unit: no gain over DDP, and not asked for)
        raise ShardingError(f"accelerate config fsdp_config.fsdp_transformer_layer_cls_to_wrap: "
                            f"no module of class {', '.join(sharding.units)} in "
                            f"{type(model).__name__}")
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=sharding.reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=sharding.reshard_after_forward)
    return model


def full_state_dict(model) -> dict:
    """The gathered full state dict on CPU (every process must call it; all get it). Names
    of one parameter (tied input and output embeddings) name one tensor again, as in the
    unsharded model's state dict, so a checkpoint stores it once."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))
    first: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first and name in full:
            full[name] = full[first[id(p)]]
        first.setdefault(id(p), name)
    return full


def _rank_file(state_dir: Path, rank: int) -> Path:
    return Path(state_dir) / f"rank{rank}.pt"


def save_state(state_dir: Path, model, optimizer, scheduler, rank: int) -> None:
    """Every process: its shards (torch.distributed.checkpoint, collective) and its random
    states and the schedule's position."""
    import numpy as np
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    Path(state_dir, SHARDS).mkdir(parents=True, exist_ok=True)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(Path(state_dir) / SHARDS))
    rng = {"python": random.getstate(), "numpy": np.random.get_state(),
           "torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    torch.save({"rng": rng, "scheduler": scheduler.state_dict()}, _rank_file(state_dir, rank))


def load_state(state_dir: Path, model, optimizer, scheduler, rank: int) -> None:
    """The inverse of save_state, into a model sharded as the saved one was."""
    import numpy as np
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    f = _rank_file(state_dir, rank)
    if not f.is_file():
        raise ShardingError(f"{state_dir}: no {f.name} (the state of process {rank}); was it "
                            f"saved with fewer processes?")
    msd, osd = get_state_dict(model, optimizer)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(Path(state_dir) / SHARDS))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])
    # written by this run's own processes (random states are not plain tensors)
    saved = torch.load(f, weights_only=False)
    scheduler.load_state_dict(saved["scheduler"])
    rng = saved["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
