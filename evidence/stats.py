"""Bootstrap statistics over per-item scores (e.g. 0/1 correctness of each evaluation image).

All functions take per-item scores in their natural unit and a ``scale`` (100 turns a fraction of
correct items into percentage points), and are deterministic for a given ``seed``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BOOTSTRAPS = 2000


def resample_means(scores: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The bootstrap distribution of the mean: means of ``n_boot`` resamples (with replacement) of the
    rows of ``scores`` (shape (n,) or (n, k)), drawn in chunks to bound memory. Deterministic for a
    given ``seed``; averaging the distributions of several strata replicate by replicate gives the
    distribution of their mean (a stratified bootstrap)."""
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = scores.shape[0]
    means = []
    chunk = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(size, n))
        means.append(scores[idx].mean(axis=1))
        done += size
    return np.concatenate(means, axis=0)


def _as_scores(scores: np.ndarray | list, name: str = "scores") -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D vector of per-item scores, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: per-item scores contain NaN or Inf")
    return array


def check_level(level: float) -> None:
    """ValueError unless the confidence ``level`` is in (0, 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level}")


def percentile_interval(boot: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile confidence interval at ``level`` of a bootstrap distribution ``boot``."""
    check_level(level)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(low), float(high)


def two_sided_p(boot: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from the bootstrap distribution ``boot`` of a difference:
    twice the smaller share of replicates on either side of zero (at most 1)."""
    return min(1.0, 2.0 * min(float(np.mean(boot <= 0.0)), float(np.mean(boot >= 0.0))))


def bootstrap_ci(
    scores: np.ndarray | list, *, n_boot: int = DEFAULT_BOOTSTRAPS, seed: int = 0, scale: float = 1.0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``scale * mean(scores)``."""
    array = _as_scores(scores)
    check_level(level)  # before the resampling
    return percentile_interval(resample_means(array, n_boot, seed) * scale, level)


@dataclass(frozen=True)
class PairedDifference:
    """``delta = scale * (mean(new) - mean(base))`` over the same items, its 95% CI and a two-sided p-value."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int

    @property
    def significant(self) -> bool:
        """True when the confidence interval excludes zero."""
        return self.ci_low > 0.0 or self.ci_high < 0.0


def paired_bootstrap(
    base: np.ndarray | list,
    new: np.ndarray | list,
    *,
    n_boot: int = DEFAULT_BOOTSTRAPS,
    seed: int = 0,
    scale: float = 1.0,
    level: float = 0.95,
) -> PairedDifference:
    """Paired bootstrap of the difference ``new - base`` on the same items (resampling items, not scores)."""
    base_scores = _as_scores(base, "base")
    new_scores = _as_scores(new, "new")
    if base_scores.shape != new_scores.shape:
        raise ValueError(
            f"paired bootstrap needs the same items for both encoders: {base_scores.size} vs {new_scores.size} scores"
        )
    check_level(level)  # before the resampling
    diff = new_scores - base_scores
    boot = resample_means(diff, n_boot, seed) * scale
    low, high = percentile_interval(boot, level)
    return PairedDifference(float(diff.mean() * scale), low, high, two_sided_p(boot), int(diff.size))
