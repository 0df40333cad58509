"""Training-seed replicates in the report: arms summarised by mean and between-seed sd, compared with the
replicate-aware test, verdicts in plain words; a lineage of single runs says seed noise is unmeasured."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.results import ResultRow, append_rows
from reports.build import build_report
from reports.compare import SIG_ARMS, lineage_analysis
from reports.load import PerItemCache, load_runs


def _replicated_run(run: Path, pivot_gain: float, k: int = 3, n: int = 300, seed_sd: float = 0.02) -> None:
    """original + K replicates of sft and of pivot on one cls task, per-item 0/1 scores on shared items."""
    rng = np.random.default_rng(7)
    difficulty = rng.uniform(0.2, 0.8, n)
    (run / "per_item").mkdir(parents=True, exist_ok=True)
    rows = []

    def add(name: str, role: str, shift: float, replicate: int | None) -> None:
        scores = (rng.random(n) < np.clip(difficulty + shift + (rng.normal(0, seed_sd) if replicate is not None else 0), 0, 1)).astype(np.float32)
        relative = f"per_item/{name}.npy"
        np.save(run / relative, scores)
        extra = {"pooling": "cls"} | ({"replicate": replicate} if replicate is not None else {})
        rows.append(ResultRow(encoder=name, role=role, base="" if role == "original" else "o", suite="cls", task="linear", dataset="d", metric="top1",
                              value=float(scores.mean() * 100), n=n, per_item=relative, extra=extra))

    add("o", "original", 0.0, None)
    for r in range(k):
        add("s" if r == 0 else f"s-s{r}", "sft", 0.0, r)
        add("p" if r == 0 else f"p-s{r}", "pivot", pivot_gain, r)
    append_rows(run, rows)


def test_arms_are_summarised_and_compared_across_seeds(tmp_path):
    run = tmp_path / "run"
    _replicated_run(run, pivot_gain=0.2)
    (lineage,) = load_runs([run]).lineages
    arms = lineage.arms()
    assert [(arm.label, arm.k) for arm in arms] == [("original", 1), ("+SFT", 3), ("+PIVOT", 3)]
    lines, verdicts, family, arm_lines = lineage_analysis(lineage, PerItemCache())
    (item,) = arm_lines
    original, sft, pivot = item.cells
    assert sft.k == 3 and sft.sd is not None and pivot.test == SIG_ARMS and pivot.significant and pivot.delta > 10
    assert all(cell.delta is None for cell in lines[0].cells)  # replicates are not tested one by one
    (verdict,) = verdicts
    assert verdict.pivot_vs_sft.test == SIG_ARMS and "+PIVOT beats +SFT significantly across 3 training seeds" in verdict.summary
    html = build_report([run], tmp_path / "report.html").read_text()
    assert "Arms: training-seed replicates together" in html and "sd over seeds" in html and "replicate-aware" in html


def test_no_difference_across_seeds_is_reported_as_such(tmp_path):
    run = tmp_path / "run"
    _replicated_run(run, pivot_gain=0.0, seed_sd=0.05)
    (lineage,) = load_runs([run]).lineages
    _, verdicts, _, _ = lineage_analysis(lineage, PerItemCache())
    assert "+PIVOT does not beat +SFT significantly across 3 training seeds" in verdicts[0].summary


def test_single_runs_say_that_seed_noise_is_not_measured(tmp_path):
    run = tmp_path / "run"
    _replicated_run(run, pivot_gain=0.1, k=1)
    (lineage,) = load_runs([run]).lineages
    _, verdicts, _, arm_lines = lineage_analysis(lineage, PerItemCache())
    assert arm_lines == [] and "training-seed noise is not measured" in verdicts[0].summary
