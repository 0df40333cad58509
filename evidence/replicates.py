"""Comparing training recipes, not single runs: arms of training-seed replicates evaluated on shared items.

An *arm* is one recipe trained K times with different seeds (``replicate = 0..K-1`` in a manifest); each
replicate has per-item scores on the same evaluation items. The difference of two arms' means has two
sources of noise, and the test counts both:

- **seeds**: a recipe retrained with another seed lands elsewhere. Its variance is estimated from the
  replicates' own means, ``var(per-seed means) / K`` per arm (with one replicate it cannot be measured,
  and the result says so);
- **evaluation items**: the items are a sample of the task. Its variance is that of the per-item
  difference of the replicate-averaged scores, ``var(d_i) / n`` (items shared by both arms pair up, so
  what every item adds to both arms cancels).

``t = delta / sqrt(seed_a + seed_b + items)`` is referred to Student's t with Welch-Satterthwaite
degrees of freedom (K_a - 1, K_b - 1 and n - 1 for the three parts). Seed-by-item noise enters both
parts, which makes the test slightly conservative. With one replicate per arm it is the paired t-test
over items. An original encoder that is not retrained is an arm of one whose seed part is zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

TEST_NAME = "replicate-aware t-test (seed and item variance, Welch-Satterthwaite df)"


@dataclass(frozen=True)
class ArmComparison:
    """``delta`` = mean(arm b) - mean(arm a) (times ``scale``); its 95% CI and two-sided p-value; the
    between-seed standard deviation of each arm's replicate means (None with one replicate); the
    standard error's parts; ``seed_noise_measured``: both arms that are trained have >= 2 replicates."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    df: float
    se: float
    mean_a: float
    mean_b: float
    seed_sd_a: float | None
    seed_sd_b: float | None
    k_a: int
    k_b: int
    n: int
    seed_noise_measured: bool


def _as_arm(replicates: Sequence[np.ndarray], name: str) -> np.ndarray:
    arm = np.asarray([np.asarray(r, dtype=np.float64).reshape(-1) for r in replicates])
    if arm.ndim != 2 or arm.shape[0] < 1 or arm.shape[1] < 2:
        raise ValueError(f"{name}: expected >= 1 replicate of >= 2 per-item scores, got shape {arm.shape}")
    if not np.isfinite(arm).all():
        raise ValueError(f"{name}: per-item scores contain NaN or Inf")
    return arm


def compare_arms(a: Sequence[np.ndarray], b: Sequence[np.ndarray], *, scale: float = 1.0, level: float = 0.95,
                 a_is_fixed: bool = False, b_is_fixed: bool = False) -> ArmComparison:
    """Compare arm ``b`` with arm ``a``: each a list of per-item score vectors (one per replicate) on the
    same items. ``*_is_fixed``: the arm is one given checkpoint, not a recipe's draw (the original), so it
    has no seed variance. ``scale`` turns the per-item unit into the reported one (100 for accuracy in %)."""
    arm_a, arm_b = _as_arm(a, "arm a"), _as_arm(b, "arm b")
    if arm_a.shape[1] != arm_b.shape[1]:
        raise ValueError(f"the arms were scored on different items ({arm_a.shape[1]} vs {arm_b.shape[1]}); the comparison needs the same items")
    n = arm_a.shape[1]
    parts: list[tuple[float, float]] = []  # (variance, degrees of freedom)

    def seed_part(arm: np.ndarray, fixed: bool) -> float | None:
        if fixed or arm.shape[0] < 2:
            return None
        seed_means = arm.mean(axis=1)
        parts.append((float(seed_means.var(ddof=1)) / arm.shape[0], arm.shape[0] - 1))
        return float(seed_means.std(ddof=1))

    sd_a, sd_b = seed_part(arm_a, a_is_fixed), seed_part(arm_b, b_is_fixed)
    d = arm_b.mean(axis=0) - arm_a.mean(axis=0)
    parts.append((float(d.var(ddof=1)) / n, n - 1))
    variance = sum(v for v, _ in parts)
    delta = float(d.mean())
    if variance <= 0:
        p = 1.0 if delta == 0 else 0.0
        se, df, half = 0.0, float("inf"), 0.0
    else:
        se = math.sqrt(variance)
        df = variance**2 / sum(v**2 / k for v, k in parts if v > 0)
        p = float(2 * stats.t.sf(abs(delta) / se, df))
        half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    trained = [(arm_a, a_is_fixed), (arm_b, b_is_fixed)]
    measured = all(arm.shape[0] >= 2 for arm, fixed in trained if not fixed)
    return ArmComparison(delta * scale, (delta - half) * scale, (delta + half) * scale, p, df, se * scale, float(arm_a.mean()) * scale,
                         float(arm_b.mean()) * scale, None if sd_a is None else sd_a * scale, None if sd_b is None else sd_b * scale,
                         arm_a.shape[0], arm_b.shape[0], n, measured)
