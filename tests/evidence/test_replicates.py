"""The replicate-aware comparison of two arms: its false-positive rate on arms from one distribution stays
at or below 5%, it finds a planted difference, and it reduces to the paired t-test with one replicate."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evidence.replicates import compare_arms


def _arm(rng, item_effect, k: int, seed_sd: float, shift: float = 0.0) -> list[np.ndarray]:
    """k replicates of 0/1 per-item scores: shared item difficulty, a per-seed shift, Bernoulli noise."""
    return [(rng.random(item_effect.size) < np.clip(item_effect + shift + rng.normal(0, seed_sd), 0, 1)).astype(float) for _ in range(k)]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_false_positive_rate_on_identical_arms_is_at_most_five_percent(k):
    rng = np.random.default_rng(k)
    draws, rejected = 1000, 0
    for _ in range(draws):
        items = rng.uniform(0.2, 0.9, 200)
        rejected += compare_arms(_arm(rng, items, k, 0.03), _arm(rng, items, k, 0.03)).p_value < 0.05
    assert rejected / draws <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / draws)  # 5% within its Monte Carlo error


def test_seed_noise_that_a_paired_item_test_ignores_is_counted():
    rng = np.random.default_rng(1)
    items, false_alarms_items_only, false_alarms = rng.uniform(0.2, 0.9, 400), 0, 0
    for _ in range(300):
        a, b = _arm(rng, items, 3, 0.05), _arm(rng, items, 3, 0.05)
        false_alarms += compare_arms(a, b).p_value < 0.05
        false_alarms_items_only += stats.ttest_rel(np.mean(b, 0), np.mean(a, 0)).pvalue < 0.05
    assert false_alarms / 300 <= 0.08 and false_alarms_items_only / 300 > 0.2  # seed shifts fool an items-only test


def test_a_planted_difference_is_found():
    rng = np.random.default_rng(2)
    items = rng.uniform(0.2, 0.8, 300)
    found = sum(compare_arms(_arm(rng, items, 3, 0.01), _arm(rng, items, 3, 0.01, shift=0.15), scale=100).p_value < 0.05 for _ in range(50))
    assert found >= 45
    result = compare_arms(_arm(rng, items, 3, 0.01), _arm(rng, items, 3, 0.01, shift=0.1), scale=100)
    assert result.ci_low > 0 and 5 < result.delta < 15 and result.seed_sd_a is not None and result.seed_noise_measured


def test_one_replicate_per_arm_is_the_paired_t_test_and_says_seed_noise_is_unmeasured():
    rng = np.random.default_rng(3)
    a, b = rng.random(50), rng.random(50) + 0.1
    result = compare_arms([a], [b])
    assert result.p_value == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert not result.seed_noise_measured and result.seed_sd_a is None and result.k_a == result.k_b == 1


def test_a_fixed_original_has_no_seed_part_and_items_must_match():
    rng = np.random.default_rng(4)
    original = rng.random(60)
    arm = [rng.random(60) for _ in range(3)]
    result = compare_arms([original], arm, a_is_fixed=True)
    assert result.seed_sd_a is None and result.seed_sd_b is not None and result.seed_noise_measured
    with pytest.raises(ValueError, match="different items"):
        compare_arms([original], [rng.random(59)])
