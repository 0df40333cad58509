"""Is a probe's score above what a probe that learned nothing would get?

Every probe row states its *trivial baseline*: the score, in the metric's own units, of a predictor that
ignores the input (the majority class, a constant mask, a uniform map). A row is *degenerate* when its
predictions are constant or when its score is not significantly above that baseline: the 95% bootstrap
interval of ``score - baseline`` over evaluation items does not lie above 0. Both statistics are
recomputed on the same resampled items, so ratio metrics (macro recall, mIoU) are tested as defined,
not as a mean of per-item values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

DEFAULT_BOOTSTRAPS = 1000


@dataclass(frozen=True)
class BaselineCheck:
    """``baseline``: the trivial predictor's score; ``delta_ci``: 95% bootstrap CI of score minus baseline;
    ``degenerate``: '' or why the score measures nothing."""

    baseline: float
    delta: float
    delta_ci: tuple[float, float]
    degenerate: str

    def extra(self) -> dict:
        """The row fields: ``trivial_baseline``, ``above_baseline_ci`` and, when degenerate, ``degenerate``."""
        found = {"trivial_baseline": self.baseline, "above_baseline_ci": list(self.delta_ci)}
        if self.degenerate:
            found["degenerate"] = self.degenerate
        return found


def check_above(
    score: Callable[[np.ndarray], float],
    baseline: Callable[[np.ndarray], float],
    n_items: int,
    *,
    constant: str = "",
    n_boot: int = DEFAULT_BOOTSTRAPS,
    seed: int = 0,
    level: float = 0.95,
) -> BaselineCheck:
    """Compare ``score(items)`` with ``baseline(items)`` (each a statistic of the item indices it is given)
    on all ``n_items`` and on ``n_boot`` resamples of them. ``constant``: a reason when the probe's
    predictions are already known to be constant (the row is then degenerate whatever its score)."""
    if n_items < 1:
        raise ValueError("check_above needs at least one evaluation item")
    everything = np.arange(n_items)
    value, base = float(score(everything)), float(baseline(everything))
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_boot)
    for b in range(n_boot):
        items = rng.integers(0, n_items, n_items)
        deltas[b] = score(items) - baseline(items)
    deltas = deltas[np.isfinite(deltas)]
    alpha = (1.0 - level) / 2.0
    low, high = (float(q) for q in np.quantile(deltas, [alpha, 1.0 - alpha])) if deltas.size else (float("nan"), float("nan"))
    reason = constant
    if not reason and not low > 0:
        reason = f"not significantly above its trivial baseline {base:.4g} (score minus baseline {value - base:+.3g}, 95% CI [{low:.3g}, {high:.3g}])"
    return BaselineCheck(base, value - base, (low, high), reason)


def mean_check(scores: np.ndarray, baseline_scores: np.ndarray | float, *, scale: float = 1.0, constant: str = "", seed: int = 0) -> BaselineCheck:
    """``check_above`` for a metric that is the mean of per-item scores (times ``scale``) against per-item
    (or one) trivial scores, e.g. 0/1 correctness against the majority class's 0/1 correctness."""
    scores = np.asarray(scores, dtype=np.float64)
    base = np.broadcast_to(np.asarray(baseline_scores, dtype=np.float64), scores.shape)
    return check_above(lambda i: scale * scores[i].mean(), lambda i: scale * base[i].mean(), scores.size, constant=constant, seed=seed)


def constant_classifier(correct: np.ndarray, labels: np.ndarray) -> str:
    """'' unless the per-item correctness is exactly that of always answering one class (then the reason):
    every correct item has the same label c, and every item labelled c is correct."""
    correct, labels = np.asarray(correct, dtype=bool), np.asarray(labels)
    hit = np.unique(labels[correct])
    if hit.size != 1 or not correct[labels == hit[0]].all():
        return ""
    return f"its predictions are constant: the correct items are exactly those of class {int(hit[0])}"
