"""How sure each number is: confidence intervals, a paired test, and Spearman's rho.

- ``mean_ci``: the 95% interval of a mean over runs or seeds, Student's t with n-1 degrees
  of freedom (mean ± t_{0.975, n-1} · s / sqrt(n)); none for n < 2.
- ``bootstrap_ci``: for one model, the percentile bootstrap of its mean per-item score over
  the test items (items resampled with replacement, ``resamples`` draws from ``seed``).
- ``paired_test``: a merge against single SFT on the same test items, the two-sided
  sign-flip permutation test of the mean per-item difference d_i = merge_i - single_i (each
  side averaged over its runs or seeds first). Under the null the sign of each d_i is
  exchangeable; p = (1 + #{|mean(s·d)| >= |mean(d)|}) / (1 + B) over B random sign vectors
  (Monte Carlo, never zero), or exactly over all 2^m sign vectors of the m nonzero
  differences when 2^m <= B.
- ``spearman``: Spearman's rank correlation (average ranks for ties) with a 95% interval
  from Fisher's z with the standard error sqrt(1.06 / (n - 3)) of Fieller, Hartley and
  Pearson (1957) for rank correlations.

Everything is numpy/scipy and seeded: the same inputs give the same numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

Z95 = 1.959963984540054


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """(low, high) of the t interval of the mean of `values`; (nan, nan) when fewer than 2."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    m, s = float(x.mean()), float(x.std(ddof=1))
    h = float(_st.t.ppf(0.5 + level / 2, x.size - 1)) * s / math.sqrt(x.size)
    return m - h, m + h


def bootstrap_ci(items, *, resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-item scores."""
    x = np.asarray(items, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedTest:
    p: float
    mean_diff: float  # mean over items of merge - single
    n: int  # items compared
    resamples: int  # sign vectors drawn; 0 when exact
    exact: bool
    seed: int


def paired_test(a, b, *, resamples: int = 10000, seed: int = 0) -> PairedTest:
    """Two-sided sign-flip permutation test of mean(a - b) = 0 on paired per-item scores
    (NaN pairs dropped)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_test: {a.shape} items against {b.shape}")
    d = a - b
    d = d[~np.isnan(d)]
    n = int(d.size)
    if n == 0:
        return PairedTest(math.nan, math.nan, 0, 0, True, seed)
    nz = d[d != 0]
    m = nz.size
    if m == 0:
        return PairedTest(1.0, 0.0, n, 0, True, seed)
    # compare sums over n (zeros contribute nothing); a small tolerance keeps ties with the
    # observed statistic counted despite rounding
    tol = 1e-12 * max(1.0, float(np.abs(nz).sum()))
    if 2 ** m <= resamples:
        signs = ((np.arange(2 ** m)[:, None] >> np.arange(m)) & 1) * 2 - 1
        sums = np.abs(signs @ nz)
        p = float(np.mean(sums >= abs(nz.sum()) - tol))
        return PairedTest(p, float(d.mean()), n, 0, True, seed)
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, 1000):
        k = min(1000, resamples - start)
        signs = rng.integers(0, 2, size=(k, m)) * 2 - 1
        hits += int(np.sum(np.abs(signs @ nz) >= abs(nz.sum()) - tol))
    return PairedTest((1 + hits) / (1 + resamples), float(d.mean()), n, resamples, False, seed)


def stars(p: float) -> str:
    """The marker of a p-value: * < 0.05, ** < 0.01, *** < 0.001."""
    if p is None or math.isnan(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


@dataclass(frozen=True)
class Spearman:
    rho: float
    low: float
    high: float
    p: float
    n: int


def spearman(x, y) -> Spearman:
    """Spearman's rho of paired samples with its 95% Fisher-z interval (NaN pairs dropped)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return Spearman(math.nan, math.nan, math.nan, math.nan, n)
    res = _st.spearmanr(x, y)
    rho = float(res.statistic)
    if n <= 3 or abs(rho) >= 1.0:
        return Spearman(rho, rho, rho, float(res.pvalue), n)
    z, se = math.atanh(rho), math.sqrt(1.06 / (n - 3))
    return Spearman(rho, math.tanh(z - Z95 * se), math.tanh(z + Z95 * se), float(res.pvalue), n)


@dataclass
class OrderEffect:
    """Figure 1's question split in two. `own`: the mean over runs of rho(run r's epoch-1
    positions, run r's losses after training); `cross`: the mean over ordered pairs r != s of
    rho(run s's positions, run r's losses). Item difficulty alone (some rows are hard whatever
    the order) gives own = cross; an order effect makes own differ from cross. `diff` = own -
    cross. Intervals: percentile bootstrap over training rows (the same rows resampled for
    every run, so that the runs' shared difficulty stays paired); p: two-sided bootstrap
    p-value of diff = 0, (1 + #{draws on the other side of 0}) * 2 / (1 + B), at most 1."""
    own: float
    own_ci: tuple[float, float]
    cross: float
    cross_ci: tuple[float, float]
    diff: float
    diff_ci: tuple[float, float]
    p: float
    runs: int
    n: int


def _rank_corr(pos: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """(K, K) Spearman's rho of loss row r against position row s, at [r, s] (average ranks
    for ties), for (K, n) arrays."""
    def z(a):
        r = _st.rankdata(a, axis=1)
        r = r - r.mean(axis=1, keepdims=True)
        return r / np.sqrt((r * r).sum(axis=1, keepdims=True))
    return z(loss) @ z(pos).T


def order_effect(positions, losses, *, resamples: int = 2000, seed: int = 0) -> OrderEffect:
    """`positions`, `losses`: (K, n) arrays over the same n training rows (column j is one
    row in every run), K >= 2. See OrderEffect."""
    pos = np.asarray(positions, dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    if pos.shape != loss.shape or pos.ndim != 2 or pos.shape[0] < 2 or pos.shape[1] < 4:
        raise ValueError(f"order effect: positions {pos.shape} and losses {loss.shape} must be "
                         "the same (K >= 2 runs, n >= 4 rows)")
    if np.isnan(pos).any() or np.isnan(loss).any():
        raise ValueError("order effect: NaN among the positions or losses")
    k, n = pos.shape
    off = ~np.eye(k, dtype=bool)

    def parts(c):
        own, cross = float(np.mean(np.diag(c))), float(np.mean(c[off]))
        return own, cross, own - cross
    own, cross, diff = parts(_rank_corr(pos, loss))
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, 3))
    for b in range(resamples):
        idx = rng.integers(0, n, n)
        draws[b] = parts(_rank_corr(pos[:, idx], loss[:, idx]))
    draws = np.nan_to_num(draws)  # a draw of constant rows has no rank correlation: 0
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    other = int(np.sum(draws[:, 2] <= 0)) if diff > 0 else int(np.sum(draws[:, 2] >= 0))
    p = min(1.0, 2 * (1 + other) / (1 + resamples))
    return OrderEffect(own, (float(lo[0]), float(hi[0])), cross, (float(lo[1]), float(hi[1])),
                       diff, (float(lo[2]), float(hi[2])), p, k, n)
