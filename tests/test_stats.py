"""The statistics of the tables, against hand-computed cases."""
import math

import numpy as np
import pytest
from scipy import stats as _sp

from ordermerge.report import stats, tables


def test_mean_ci_is_the_t_interval():
    # mean 2, s = 1, n = 3: t_{0.975, 2} = 4.30265273, half-width 4.30265273 / sqrt(3)
    lo, hi = stats.mean_ci([1.0, 2.0, 3.0])
    h = 4.30265273 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((2 - h, 2 + h), rel=1e-8)
    assert all(math.isnan(v) for v in stats.mean_ci([5.0]))


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    items = [1.0] * 30 + [0.0] * 10
    a = stats.bootstrap_ci(items, resamples=4000, seed=3)
    assert a == stats.bootstrap_ci(items, resamples=4000, seed=3)
    cont = np.random.default_rng(0).normal(size=50)
    assert stats.bootstrap_ci(cont, seed=3) != stats.bootstrap_ci(cont, seed=4)
    # the normal approximation: 0.75 ± 1.96 sqrt(0.75 * 0.25 / 40) = [0.616, 0.884]
    assert a[0] == pytest.approx(0.616, abs=0.03) and a[1] == pytest.approx(0.884, abs=0.03)
    assert stats.bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)


def test_paired_test_exact_cases():
    # five items all better by 1: only the all-plus and all-minus sign vectors reach |5|
    t = stats.paired_test([1, 1, 1, 1, 1], [0, 0, 0, 0, 0])
    assert t.exact and t.p == pytest.approx(2 / 32) and t.mean_diff == 1.0 and t.n == 5
    # d = (1, 1, -1): sums over the 8 sign vectors have |s| in {3, 1, 1, 1, 1, 1, 1, 3}
    t = stats.paired_test([1, 1, 0], [0, 0, 1])
    assert t.p == pytest.approx(1.0) and t.mean_diff == pytest.approx(1 / 3)
    # d = (2, 1, 1, 0): zeros ignored; |sum| >= 4 only for +++ and ---, of 8
    t = stats.paired_test([2, 1, 1, 0], [0, 0, 0, 0])
    assert t.p == pytest.approx(2 / 8) and t.n == 4
    # identical scores: no evidence at all
    assert stats.paired_test([1, 0, 1], [1, 0, 1]).p == 1.0


def test_paired_test_monte_carlo_agrees_with_the_exact_value():
    rng = np.random.default_rng(0)
    a = rng.normal(size=13) + 0.5
    b = rng.normal(size=13)
    exact = stats.paired_test(a, b, resamples=2 ** 13)  # 13 nonzero differences: 8192 vectors
    mc = stats.paired_test(a, b, resamples=8000, seed=1)
    assert exact.exact and not mc.exact and mc.resamples == 8000
    assert 0.001 < exact.p < 0.9
    assert mc.p == pytest.approx(exact.p, abs=0.015)
    assert mc.p == stats.paired_test(a, b, resamples=8000, seed=1).p
    # a large consistent gain is detected
    big = stats.paired_test(np.ones(200), np.r_[np.zeros(150), np.ones(50)], resamples=5000)
    assert big.p == pytest.approx(1 / 5001)
    with pytest.raises(ValueError, match="items"):
        stats.paired_test([1, 2], [1])


def test_spearman_and_its_interval():
    s = stats.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])
    # ranks y = (1, 2, 3.5, 5, 3.5): rho = cov / (sd sd) = 0.8207826816681233
    assert s.rho == pytest.approx(0.8207826816681233, rel=1e-9)
    z, se = math.atanh(s.rho), math.sqrt(1.06 / 2)
    assert (s.low, s.high) == pytest.approx((math.tanh(z - 1.959964 * se), math.tanh(z + 1.959964 * se)), rel=1e-5)
    assert s.low < s.rho < s.high
    d = stats.spearman(np.arange(50), -np.arange(50) ** 3)
    assert d.rho == pytest.approx(-1.0) and d.low == pytest.approx(-1.0)
    assert math.isnan(stats.spearman([1, 2], [2, 1]).rho)
    assert stats.stars(0.0004) == "***" and stats.stars(0.04) == "*" and stats.stars(0.2) == ""


def _rec(task, kind, name, items, scheme="shuffle"):
    return {"task": task, "kind": kind, "name": name, "scheme": scheme,
            "score": float(np.mean(list(items.values()))), "items": items}


def test_table_cells_carry_intervals_and_paired_p_values():
    ids = [f"t:{i}" for i in range(6)]
    runs = [dict(zip(ids, [1, 0, 0, 1, 0, 0])), dict(zip(ids, [1, 1, 0, 0, 0, 0]))]
    merged = dict(zip(ids, [1, 1, 1, 1, 1, 0]))
    recs = [_rec("gsm8k", "sft", f"run{i}", r) for i, r in enumerate(runs)]
    recs.append(_rec("gsm8k", "merged", "avg", merged))
    t = tables.table1(recs, {"resamples": 1000, "bootstrap": 500, "seed": 0})
    assert t.loc["single", "gsm8k"] == pytest.approx(100 / 3)
    lo, hi = stats.mean_ci([100 / 3, 100 / 3])
    assert t.loc["single", "gsm8k_n"] == 2 and t.loc["single", "gsm8k_lo"] == pytest.approx(lo)
    # the merge's one model: a bootstrap over its 6 items
    blo, bhi = stats.bootstrap_ci(list(merged.values()), resamples=500, seed=0)
    assert (t.loc["weighted-avg", "gsm8k_lo"], t.loc["weighted-avg", "gsm8k_hi"]) == \
        pytest.approx((100 * blo, 100 * bhi))
    # per-item single means (1, .5, 0, .5, 0, 0): d = (0, .5, 1, .5, 1, 0), 4 nonzero, all
    # positive: exact p = 2/16
    assert t.loc["weighted-avg", "gsm8k_p"] == pytest.approx(2 / 16)
    assert math.isnan(t.loc["single", "gsm8k_p"])
    md = tables.to_markdown(t)
    assert "| weighted-avg | 83.33 | +50.00 |" in md and "1000 resamples" in md
    tex = tables.to_latex(t)
    assert r"33.33 $\pm$ 0.00" in tex and r"\toprule" in tex


def test_table4_rows_in_the_papers_layout():
    ids = ["a", "b", "c", "d"]
    recs = []
    for scheme in ("shuffle", "fix-batch"):
        recs += [_rec("gsm8k", "sft", f"run{i}", dict(zip(ids, [1, 0, 0, i])), scheme) for i in range(2)]
        recs.append(_rec("gsm8k", "merged", "resample-n1-s0", dict(zip(ids, [1, 1, 0, 1])), scheme))
    t = tables.table4(recs)
    assert list(t.index) == ["single", "resample (shuffle)", "resample (fix-batch)", "single (fix-batch)"]
    assert t.loc["resample (fix-batch)", "gsm8k"] == 75.0
    assert t.loc["single (fix-batch)", "avg_delta"] == 0.0


def test_table2_blocks_per_model_and_the_papers_arrows():
    ids = ["a", "b", "c", "d"]
    recs = []
    for model, task in (("tiny-bert", "glue_sst2"), ("tiny-llama", "sst2"), ("tiny-llama", "mnli")):
        for r in range(2):
            recs.append({**_rec(task, "sft", f"run{r}", dict(zip(ids, [1, 0, 0, r]))), "model": model})
        recs.append({**_rec(task, "merged", "select-s0", dict(zip(ids, [1, 1, 1, 1]))), "model": model})
    t = tables.table2([{k: v for k, v in r.items() if k != "scheme"} for r in recs])
    assert list(t["model"]) == ["tiny-bert", "tiny-bert", "tiny-llama", "tiny-llama"]
    assert set(tables.task_columns(t)) == {"SST-2", "MNLI"}
    bert = t[t.model == "tiny-bert"]
    assert bert.loc["single", "SST-2"] == 37.5 and math.isnan(bert.loc["single", "MNLI"])
    md = tables.table2_markdown(t)
    assert "| tiny-bert | param-selection | 37.50 → 100.00 | – |" in md
    assert "| tiny-llama | param-selection | 37.50 → 100.00 | 37.50 → 100.00 |" in md
    assert tables.table2_latex(t).count(r"\begin{table}") == 2


def test_order_effect_pairs_every_run_with_every_runs_positions():
    rng = np.random.default_rng(0)
    k, n = 3, 30
    pos = np.array([rng.permutation(n) for _ in range(k)], dtype=float)
    loss = rng.normal(size=(k, n))
    loss[:, :5] = 1.0  # ties: average ranks, as scipy's
    c = stats._rank_corr(pos, loss)
    for r in range(k):
        for s in range(k):
            assert c[r, s] == pytest.approx(_sp.spearmanr(pos[s], loss[r]).statistic, abs=1e-12)
    eff = stats.order_effect(pos, loss, resamples=200, seed=0)
    off = ~np.eye(k, dtype=bool)
    assert eff.own == pytest.approx(np.mean(np.diag(c)), abs=1e-12)
    assert eff.cross == pytest.approx(np.mean(c[off]), abs=1e-12)
    assert eff.diff == pytest.approx(eff.own - eff.cross, abs=1e-12) and (eff.runs, eff.n) == (k, n)
    # seeded: the same draws again
    assert stats.order_effect(pos, loss, resamples=200, seed=0) == eff


def test_order_effect_tells_order_from_item_difficulty():
    rng = np.random.default_rng(1)
    k, n = 4, 200
    pos = np.array([rng.permutation(n) for _ in range(k)], dtype=float)
    difficulty = rng.normal(size=n)
    # an order effect: each run's loss falls with its own position (and shares the difficulty)
    ordered = difficulty - 0.02 * pos + rng.normal(0, 0.3, (k, n))
    eff = stats.order_effect(pos, ordered, resamples=500, seed=0)
    assert eff.own < -0.5 and abs(eff.cross) < 0.1
    assert eff.diff_ci[1] < 0 and eff.p < 0.01
    assert eff.own_ci[0] <= eff.own <= eff.own_ci[1] and eff.cross_ci[0] <= eff.cross <= eff.cross_ci[1]
    # item difficulty alone: every run's loss is the item's, whatever its position; own and
    # cross are then both near 0 and their difference's interval holds 0
    alike = np.tile(difficulty, (k, 1)) + rng.normal(0, 0.1, (k, n))
    eff = stats.order_effect(pos, alike, resamples=500, seed=0)
    assert eff.diff_ci[0] < 0 < eff.diff_ci[1] and eff.p > 0.05
    with pytest.raises(ValueError, match="must be the same"):
        stats.order_effect(pos, alike[:, :-1])
    with pytest.raises(ValueError, match="NaN"):
        stats.order_effect(pos, np.where(alike > 2, np.nan, alike))
