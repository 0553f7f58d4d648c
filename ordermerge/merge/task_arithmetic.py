"""task-arithmetic (Ilharco et al. 2023): theta = theta_base + lambda * sum_i w_i tau_i,
tau_i = theta_i - theta_base in float32, summed in sub-model order, rounded once."""
from __future__ import annotations

from .taskvec import f32, finish, task_vectors, weighted_sum


def run(c):
    tau = task_vectors(c)
    return finish(c, weighted_sum(tau, f32(c.weights))), {}


def fused_available(dtype, out_dtype, method: str = "") -> bool:
    from . import fused_tv
    return fused_tv.available(dtype, out_dtype)


def run_fused(c):
    from . import fused_tv
    return fused_tv.run(c)
