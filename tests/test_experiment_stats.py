"""The v2 experiment's statistics against references written from the formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cclip_jax.experiment import stats

# Student-t 0.975 quantiles (tables), for n - 1 = 1..4 degrees of freedom.
T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105}


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_paired_t_matches_the_textbook_interval(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(0.5, 0.1, n), rng.normal(0.45, 0.1, n)
    d = a - b
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = T975[n - 1] * sd / math.sqrt(n)
    got = stats.paired_t(a, b)
    assert got["n"] == n
    np.testing.assert_allclose(
        [got["mean"], got["sd"], got["lo"], got["hi"]],
        [mean, sd, mean - half, mean + half],
        rtol=1e-8,
    )
    # The two-sided p-value of mean 0 is 0.05 exactly when 0 sits on the 95% bound.
    shifted = stats.paired_t(d - (mean - half), np.zeros(n))
    assert shifted["p"] == pytest.approx(0.05, rel=1e-6)


def test_paired_t_degenerate_cases():
    one = stats.paired_t([0.3], [0.1])
    assert one["mean"] == pytest.approx(0.2) and math.isnan(one["lo"]) and math.isnan(one["p"])
    flat = stats.paired_t([0.5, 0.75], [0.25, 0.5])  # equal differences: no spread
    assert flat["lo"] == flat["hi"] == 0.25 and flat["p"] == 0.0
    with pytest.raises(ValueError, match="equal length"):
        stats.paired_t([0.1, 0.2], [0.1])


def test_holm_step_down():
    # p sorted: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04, kept monotone).
    adj = stats.holm({"a": 0.04, "b": 0.01, "c": 0.02})
    assert adj == pytest.approx({"a": 0.04, "b": 0.03, "c": 0.04})
    # Monotone: a later p that would adjust lower takes the running maximum; capped at 1.
    adj = stats.holm({"a": 0.3, "b": 0.6, "c": 0.61})
    assert adj == pytest.approx({"a": 0.9, "b": 1.0, "c": 1.0})
    adj = stats.holm({"a": float("nan"), "b": 0.01})
    assert math.isnan(adj["a"]) and adj["b"] == pytest.approx(0.02)  # NaN still counts in m


def test_bootstrap_interval_covers_the_difference_and_widens_with_item_noise():
    rng = np.random.default_rng(0)
    s, n = 5, 300
    p_a, p_b = 0.70, 0.60
    a = [(rng.random((s, n)) < p_a).astype(float) for _ in range(2)]
    b = [(rng.random((s, n)) < p_b).astype(float) for _ in range(2)]
    got = stats.bootstrap_diff(a, b, n_boot=500, seed=1)
    observed = float(
        np.mean(np.mean([x.mean(1) for x in a], 0) - np.mean([x.mean(1) for x in b], 0))
    )
    assert got["mean"] == pytest.approx(observed)
    assert got["lo"] < observed < got["hi"]
    assert got["lo"] > 0  # 0.10 apart on 3000 items a side
    # The same seeds on a tenth of the items: a wider interval.
    few = stats.bootstrap_diff([x[:, :30] for x in a], [x[:, :30] for x in b], n_boot=500, seed=1)
    assert few["hi"] - few["lo"] > 2 * (got["hi"] - got["lo"])
    # Identical arms: every replicate is 0.
    same = stats.bootstrap_diff(a, a, n_boot=50)
    assert same["lo"] == same["hi"] == same["mean"] == 0.0
    with pytest.raises(ValueError, match="item set 1"):
        stats.bootstrap_diff(a, [b[0], b[1][:, :10]], n_boot=10)


def test_bootstrap_pairs_items_across_arms():
    """Two arms that differ by a constant per item: resampling the same items for both keeps
    the difference exactly constant (an unpaired resampling would not)."""
    rng = np.random.default_rng(3)
    base = rng.random((4, 200))
    got = stats.bootstrap_diff([base + 0.05], [base], n_boot=200)
    assert got["lo"] == pytest.approx(0.05) and got["hi"] == pytest.approx(0.05)


def _diff(mean, lo, hi):
    return {"mean": mean, "lo": lo, "hi": hi}


@pytest.mark.parametrize(
    ("diff", "p", "guards", "verdict"),
    [
        (_diff(0.06, 0.02, 0.10), 0.01, {"g": 0.0}, "support"),
        (_diff(0.06, 0.02, 0.10), 0.01, {"g": -0.03}, "inconclusive"),  # a guard lost 0.03
        (_diff(0.02, 0.01, 0.029), 0.01, {"g": 0.0}, "refutation"),  # real but below 0.03
        (_diff(0.0, -0.02, 0.02), 0.9, {"g": 0.0}, "refutation"),
        (_diff(0.02, -0.02, 0.06), 0.3, {"g": 0.0}, "inconclusive"),
        (_diff(0.05, 0.01, 0.09), 0.06, {"g": 0.0}, "inconclusive"),  # not significant after Holm
        (_diff(-0.05, -0.09, -0.01), 0.01, {"g": 0.0}, "refutation"),  # significantly worse
    ],
)
def test_decide(diff, p, guards, verdict):
    got, reason = stats.decide(diff, p, guards, min_effect=0.03, guard_loss=0.02)
    assert got == verdict, reason
    assert reason
