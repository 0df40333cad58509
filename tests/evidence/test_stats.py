"""Tests for evidence.stats: percentile bootstrap CI and paired bootstrap of a difference."""
from __future__ import annotations

import numpy as np
import pytest

from evidence.stats import PairedDifference, bootstrap_ci, paired_bootstrap


def bernoulli(n: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_ci_contains_the_mean_and_scales():
    scores = bernoulli(500, 0.7, seed=0)
    low, high = bootstrap_ci(scores, scale=100.0)
    assert low < scores.mean() * 100.0 < high
    # Binomial standard error is ~2.05 points here, so a 95% interval is ~8 points wide.
    assert 6.0 < high - low < 10.0
    low_frac, high_frac = bootstrap_ci(scores)
    assert low_frac == pytest.approx(low / 100.0) and high_frac == pytest.approx(high / 100.0)


def test_ci_is_deterministic_for_a_seed_and_narrows_with_n():
    scores = bernoulli(300, 0.5, seed=1)
    assert bootstrap_ci(scores, seed=3) == bootstrap_ci(scores, seed=3)
    assert bootstrap_ci(scores, seed=3) != bootstrap_ci(scores, seed=4)
    small = bootstrap_ci(bernoulli(100, 0.5, seed=2))
    large = bootstrap_ci(bernoulli(2500, 0.5, seed=2))
    assert (large[1] - large[0]) < (small[1] - small[0]) / 3.0


def test_ci_of_constant_scores_is_a_point_and_level_widens():
    assert bootstrap_ci(np.ones(50), scale=100.0) == (100.0, 100.0)
    scores = bernoulli(400, 0.4, seed=5)
    narrow, wide = bootstrap_ci(scores, level=0.5), bootstrap_ci(scores, level=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_paired_bootstrap_detects_a_planted_difference():
    base = bernoulli(1000, 0.6, seed=0)
    new = base.copy()
    wrong = np.flatnonzero(base == 0.0)
    new[wrong[:80]] = 1.0  # the new encoder fixes 80 of the base's errors: +8 points
    result = paired_bootstrap(base, new, scale=100.0)
    assert isinstance(result, PairedDifference)
    assert result.delta == pytest.approx(8.0) and result.n == 1000
    assert result.significant and result.ci_low > 0.0 and result.p_value < 0.01
    # The reverse comparison is the mirror image.
    reverse = paired_bootstrap(new, base, scale=100.0)
    assert reverse.delta == pytest.approx(-8.0) and reverse.significant and reverse.ci_high < 0.0


def test_paired_bootstrap_does_not_flag_a_null_difference():
    base = bernoulli(1000, 0.6, seed=0)
    new = base.copy()
    right, wrong = np.flatnonzero(base == 1.0), np.flatnonzero(base == 0.0)
    new[right[:40]] = 0.0  # 40 items lost and 40 gained: same accuracy, different items
    new[wrong[:40]] = 1.0
    result = paired_bootstrap(base, new, scale=100.0)
    assert result.delta == pytest.approx(0.0)
    assert not result.significant and result.ci_low < 0.0 < result.ci_high and result.p_value > 0.5
    identical = paired_bootstrap(base, base)
    assert identical.delta == 0.0 and identical.p_value == 1.0 and not identical.significant


def test_paired_bootstrap_is_deterministic_for_a_seed():
    base, new = bernoulli(200, 0.5, seed=1), bernoulli(200, 0.55, seed=2)
    assert paired_bootstrap(base, new, seed=7) == paired_bootstrap(base, new, seed=7)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: paired_bootstrap([1, 0, 1], [1, 0]), "same items"),
        (lambda: bootstrap_ci([]), "non-empty"),
        (lambda: bootstrap_ci(np.ones((3, 2))), "1-D"),
        (lambda: bootstrap_ci([1.0, float("nan")]), "NaN"),
        (lambda: paired_bootstrap([1.0, 0.0], [float("inf"), 0.0]), "new"),
        (lambda: bootstrap_ci([1.0, 0.0], n_boot=0), "n_boot"),
        (lambda: bootstrap_ci([1.0, 0.0], level=95), "level"),
    ],
)
def test_invalid_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
