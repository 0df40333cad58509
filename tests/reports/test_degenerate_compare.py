"""Degenerate rows in comparisons: a degenerate original is never compared; a row that fell to its trivial
baseline where the original stands above it is compared and flagged (the positive control's case)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.results import ResultRow, append_rows
from reports.compare import lineage_analysis
from reports.load import PerItemCache, load_runs

N = 200


def _run(run: Path, original_rate: float, control_rate: float) -> None:
    """An original and a control on one loc metric, per-item 0/1 hits; 20% is the trivial baseline."""
    rng = np.random.default_rng(3)
    (run / "per_item").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, role, rate in (("o", "original", original_rate), ("c", "positive-control", control_rate)):
        scores = (rng.random(N) < rate).astype(np.float32)
        np.save(run / f"per_item/{name}.npy", scores)
        degenerate = "" if rate > 0.3 else "not significantly above its trivial baseline 20"
        extra = {"trivial_baseline": 20.0} | ({"degenerate": degenerate} if degenerate else {})
        rows.append(ResultRow(encoder=name, role=role, base="" if role == "original" else "o", suite="loc", task="gradcam", dataset="d",
                              metric="pointing_game", value=float(scores.mean() * 100), n=N, per_item=f"per_item/{name}.npy", extra=extra))
    append_rows(run, rows)


def _control_cell(run: Path):
    (lineage,) = load_runs([run]).lineages
    lines, verdicts, _, _ = lineage_analysis(lineage, PerItemCache())
    (line,) = lines
    return line.cells[1], verdicts[0].summary


def test_a_control_that_fell_to_its_baseline_is_flagged_worse(tmp_path):
    _run(tmp_path / "run", original_rate=0.45, control_rate=0.2)
    cell, summary = _control_cell(tmp_path / "run")
    assert cell.degenerate and cell.significant and not cell.better and cell.delta < -15
    assert "significantly worse" in summary and "and degenerate" in summary


def test_nothing_is_compared_with_a_degenerate_original(tmp_path):
    _run(tmp_path / "run", original_rate=0.2, control_rate=0.45)
    cell, _ = _control_cell(tmp_path / "run")
    assert cell.delta is None and "the original row is degenerate" in cell.note
