"""reports.figures: every panel is drawn (split over several figures), none silently dropped."""
from __future__ import annotations

from pathlib import Path

from benchmarks.results import ResultRow, append_rows
from reports.figures import MAX_PANELS, lineage_figures
from reports.load import load_runs


def _rows(encoder: str, role: str, base: str, tasks: int, layers: int) -> list[ResultRow]:
    ident = {"encoder": encoder, "role": role, "base": base, "weights_hash": f"h-{encoder}"}
    rows = []
    for task in range(tasks):
        rows.append(ResultRow(**ident, suite="cls", task=f"task{task}", dataset="d", metric="top1", value=50.0 + task))
        for layer in range(layers):
            rows.append(ResultRow(**ident, suite="cls", task=f"task{task}", dataset="d", metric="top1",
                                  value=40.0 + layer, extra={"layer": layer}))
    return rows


def test_more_panels_than_fit_one_figure_are_split_not_dropped(tmp_path: Path):
    tasks = MAX_PANELS + 3  # one layer-curve panel per task: 15 panels
    append_rows(tmp_path, _rows("orig", "original", "", tasks, 3) + _rows("new", "pivot", "orig", tasks, 3))
    (lineage,) = load_runs([tmp_path]).lineages
    figures, errors = lineage_figures(lineage)
    assert not errors
    titles = [figure.title for figure in figures]
    assert titles.count("cls: metric vs layer") == 2, titles
    assert titles.count("cls") == 1, "the 15 bar groups share one panel (one metric, one dataset)"
