"""Summary tables of one lineage: every metric of every encoder, and each trained encoder's delta
versus the original with a significance mark.

Significance, in order of preference:

* ``paired`` -- both rows have per-item score files of the same length (same items): a paired
  bootstrap (``probes.stats.paired_bootstrap``) of ``new - original``; significant when its 95% CI
  excludes 0.
* ``ci`` -- no usable per-item scores but both rows have 95% CIs: significant when the two intervals
  do not overlap (a conservative test: non-overlap implies p < 0.05, overlap does not imply p > 0.05).
* ``none`` -- neither: the delta is shown without a test.

Deltas are in the metric's own unit (percentage points for accuracies): ``value(new) - value(original)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probes.stats import paired_bootstrap
from reports.load import Lineage, LoadedRow, PerItemCache, is_ok, row_id, row_layer

SIG_PAIRED = "paired"
SIG_CI = "ci"
SIG_NONE = "none"


@dataclass
class Cell:
    """One encoder's value on one table line, with its delta versus the lineage's original."""

    status: str  # ok | skipped | failed | absent
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    reason: str = ""
    delta: float | None = None
    delta_ci: tuple[float, float] | None = None
    test: str = SIG_NONE
    significant: bool = False
    better: bool | None = None  # delta in the good direction (None: no delta or zero)
    note: str = ""  # why no paired test was possible, p-value, ...


@dataclass
class TableLine:
    suite: str
    task: str
    dataset: str
    metric: str
    variant: str
    higher_is_better: bool
    layer: object
    cells: list[Cell] = field(default_factory=list)


def _scale(values: np.ndarray, reported: float) -> float:
    """1 or 100: the factor that turns the per-item mean into the reported value (accuracies are in %)."""
    mean = float(values.mean())
    return min((1.0, 100.0), key=lambda scale: abs(mean * scale - reported))


def _compare(base: LoadedRow, new: LoadedRow, cells: Cell, cache: PerItemCache, n_boot: int) -> None:
    base_row, new_row = base.row, new.row
    cells.delta = float(new_row.value) - float(base_row.value)
    if cells.delta != 0:
        cells.better = (cells.delta > 0) == bool(base_row.higher_is_better)
    base_scores, new_scores = cache.get(base), cache.get(new)
    why_not = ""
    if isinstance(base_scores, str) or isinstance(new_scores, str):
        why_not = base_scores if isinstance(base_scores, str) else new_scores
    elif base_scores.shape != new_scores.shape:
        why_not = f"per-item lengths differ ({base_scores.size} vs {new_scores.size})"
    elif (
        base_row.dataset_fingerprint
        and new_row.dataset_fingerprint
        and base_row.dataset_fingerprint != new_row.dataset_fingerprint
    ):
        why_not = "dataset fingerprints differ"
    if not why_not:
        scale = _scale(new_scores, float(new_row.value))
        diff = paired_bootstrap(base_scores, new_scores, scale=scale, n_boot=n_boot, seed=0)
        cells.test = SIG_PAIRED
        cells.significant = diff.significant
        cells.delta_ci = (diff.ci_low, diff.ci_high)
        cells.note = f"paired bootstrap over {diff.n} items: 95% CI [{diff.ci_low:.3g}, {diff.ci_high:.3g}], p={diff.p_value:.3g}"
        return
    have_ci = None not in (base_row.ci_low, base_row.ci_high, new_row.ci_low, new_row.ci_high)
    if have_ci:
        cells.test = SIG_CI
        cells.significant = new_row.ci_low > base_row.ci_high or new_row.ci_high < base_row.ci_low
        cells.note = f"{why_not}; compared 95% CIs ({'disjoint' if cells.significant else 'overlapping'})"
    else:
        cells.note = f"{why_not}; no CIs either: untested"


def lineage_table(lineage: Lineage, cache: PerItemCache, n_boot: int = 2000) -> list[TableLine]:
    """One line per row identity (suite, task, dataset, metric, variant), one cell per encoder of the lineage."""
    by_id: dict[tuple, dict[str, LoadedRow]] = {}
    for item in lineage.rows:
        by_id.setdefault(row_id(item.row), {})[item.row.encoder] = item
    original = lineage.original.name if lineage.original else None
    lines = []
    for ident, per_encoder in by_id.items():
        first = next(iter(per_encoder.values())).row
        if original in per_encoder:
            first = per_encoder[original].row
        line = TableLine(*ident, higher_is_better=bool(first.higher_is_better), layer=row_layer(first))
        base_item = per_encoder.get(original) if original else None
        for info in lineage.encoders:
            item = per_encoder.get(info.name)
            if item is None:
                line.cells.append(Cell(status="absent"))
                continue
            row = item.row
            cell = Cell(
                status=row.status if is_ok(row) or row.status != "ok" else "failed",
                value=row.value,
                ci_low=row.ci_low,
                ci_high=row.ci_high,
                n=row.n,
                reason=row.reason or ("" if is_ok(row) else "row has status ok but no value"),
            )
            if is_ok(row) and base_item is not None and info.name != original and is_ok(base_item.row):
                _compare(base_item, item, cell, cache, n_boot)
            line.cells.append(cell)
        lines.append(line)
    return lines
