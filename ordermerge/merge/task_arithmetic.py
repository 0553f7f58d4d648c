"""task-arithmetic (Ilharco et al. 2023): theta = theta_base + lambda * sum_i w_i tau_i,
tau_i = theta_i - theta_base in float32, summed in sub-model order, rounded once."""
from __future__ import annotations

from .taskvec import finish, task_vectors, weights_of


def run(c):
    tau = task_vectors(c)
    return finish(c, (tau * weights_of(c, tau.device)).sum(0)), {}
