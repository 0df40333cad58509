"""The report tells a real difference from noise (Holm over the lineage's tests, colour only where the
corrected test says so, verdict lines first) and refuses broken results files with a clear error."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks.results import ResultRow, append_rows
from reports.build import build_report, main
from reports.compare import apply_correction, holm_adjust, lineage_analysis
from reports.load import PerItemCache, load_runs


def test_holm_adjust_matches_the_textbook_example():
    # Holm (1979): p sorted (0.01, 0.02, 0.03, 0.04) with m=4 -> 0.04, 0.06, 0.06, 0.06 (monotone).
    assert holm_adjust([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([]) == []


def _lineage_rows(run: Path, deltas: dict[str, tuple[int, int]], n: int = 400, tasks: int = 12) -> None:
    """original / sft / pivot on ``tasks`` cls tasks with per-item scores; on ``task`` pivot gets
    ``deltas[task] = (gained, lost)`` items right/wrong that the original got wrong/right."""
    rng = np.random.default_rng(1)
    rows = []
    (run / "per_item").mkdir(parents=True, exist_ok=True)
    for t in range(tasks):
        task = f"t{t}"
        base = (rng.random(n) < 0.5).astype(np.float32)
        pivot = base.copy()
        gained, lost = deltas.get(task, (0, 0))
        pivot[np.flatnonzero(base == 0)[:gained]] = 1.0
        pivot[np.flatnonzero(base == 1)[:lost]] = 0.0
        for name, role, scores in (("o", "original", base), ("s", "sft", base), ("p", "pivot", pivot)):
            relative = f"per_item/{name}_{task}.npy"
            np.save(run / relative, scores)
            rows.append(ResultRow(encoder=name, role=role, base="" if name == "o" else "o", suite="cls", task=task,
                                  dataset="d", metric="top1", value=float(scores.mean() * 100), n=n, per_item=relative,
                                  extra={"n_classes": 10, "chance": 10.0, "selected": {"lr": 0.01, "epochs": 300}}))
    append_rows(run, rows)


def test_raw_significant_but_not_after_correction_is_not_coloured(tmp_path):
    # t0: +20 points (survives Holm); t1: 34 items gained, 18 lost = +4 points, paired z ~ 2.2
    # (raw p ~ 0.03), which does not survive a correction over ~25 tests.
    run = tmp_path / "run"
    _lineage_rows(run, {"t0": (80, 0), "t1": (34, 18)})
    (lineage,) = load_runs([run]).lineages
    lines, verdicts, family, _ = lineage_analysis(lineage, PerItemCache(), n_boot=2000)
    by_task = {line.task: line for line in lines}
    strong, weak = by_task["t0"].cells[2], by_task["t1"].cells[2]
    assert strong.significant and strong.p_adjusted < 0.05
    assert weak.p_value < 0.05 and weak.p_adjusted >= 0.05 and not weak.significant
    assert family >= 24  # every delta (sft and pivot on 12 tasks) plus the verdict's pivot-vs-sft test
    html = build_report([run], tmp_path / "report.html").read_text()
    row = html[html.index("<td>t1</td>"):]
    row = row[: row.index("</tr>")]
    assert ' good"' not in row and ' bad"' not in row and "*" not in row.split("p<sub>")[0]
    assert re.search(r"p=[0-9.e-]+ raw, [0-9.e-]+ Holm-adjusted", row)
    strong_row = html[html.index("<td>t0</td>"):]
    assert ' good"' in strong_row[: strong_row.index("</tr>")]


def test_report_opens_with_its_answer_and_shows_n_classes_chance_hyperparameters(tmp_path):
    run = tmp_path / "run"
    _lineage_rows(run, {"t0": (80, 0)}, tasks=1)
    html = build_report([run], tmp_path / "report.html").read_text()
    answer = html.index('id="summary"')
    assert answer < html.index('id="method"') < html.index('id="lineage-1"')
    text = re.sub(r"<[^>]+>", "", html[answer: html.index("</section>", answer)])
    assert "original" in text and "+SFT" in text and "+PIVOT" in text
    assert "+PIVOT is ahead of +SFT on top1" in text and "Holm p = " in text and "training-seed noise is not measured" in text
    details = html[html.index('id="lineage-1"'):]
    assert "+PIVOT beats +SFT significantly" in details and "Holm-adjusted" in details  # the long verdict lines stay in the lineage's section
    assert "<th>n</th><th>Classes</th><th>Chance</th>" in html
    assert "epochs=300, lr=0.010" in html


def test_verdict_says_when_pivot_does_not_beat_sft(tmp_path):
    run = tmp_path / "run"
    _lineage_rows(run, {}, tasks=1)
    (lineage,) = load_runs([run]).lineages
    _, verdicts, _, _ = lineage_analysis(lineage, PerItemCache(), n_boot=500)
    assert "+PIVOT does not beat +SFT significantly" in verdicts[0].summary


def test_vqa_verdict_prefers_the_fresh_mllms_of_pivots_protocol(tmp_path):
    run = tmp_path / "run"
    rows = []
    for protocol, value in (("", 40.0), ("pivot-eval", 60.0)):  # the lineage's own MLLMs, then the fresh ones
        for name, role in (("o", "original"), ("s", "sft"), ("p", "pivot")):
            extra = {"protocol": protocol} if protocol else {}
            rows.append(ResultRow(encoder=name, role=role, base="" if name == "o" else "o", suite="vqa", task="shapes_vqa",
                                  dataset="lmms-eval", metric="exact_match", value=value, n=100, extra=extra))
            rows.append(ResultRow(encoder=name, role=role, base="" if name == "o" else "o", suite="vqa", task="shapes_vqa:colour",
                                  dataset="lmms-eval", metric="exact_match", value=99.0, n=30, extra={**extra, "kind": "colour"}))
    append_rows(run, rows)
    from benchmarks.suites import SUITES

    # As benchmarks.run writes it: the suite's declared headline, preferring PIVOT's protocol.
    (run / "config.json").write_text(json.dumps({"suites": {"vqa": {"headline": [list(h) for h in SUITES.get("vqa").headline]}}}))
    data = load_runs([run])
    (lineage,) = data.lineages
    _, verdicts, _, _ = lineage_analysis(lineage, PerItemCache(), n_boot=200, headlines=data.headlines())
    (vqa,) = [verdict for verdict in verdicts if verdict.line.suite == "vqa"]
    assert (vqa.line.task, vqa.line.variant) == ("shapes_vqa", "protocol=pivot-eval")
    assert [cell.value for _, _, cell in vqa.entries] == [60.0, 60.0, 60.0]


def test_apply_correction_ignores_untested_cells():
    from reports.compare import Cell

    cells = [Cell(status="ok", p_value=0.01), Cell(status="ok"), Cell(status="ok", p_value=0.04)]
    assert apply_correction(cells) == 2
    assert cells[0].p_adjusted == pytest.approx(0.02) and cells[1].p_adjusted is None and cells[2].significant is True


# ------------------------------------------------------------------ broken inputs to reports.build


def _raw(run: Path, lines: list[str]) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    return run


def _row(**fields) -> str:
    row = ResultRow(encoder="e", suite="cls", task="linear", dataset="d", metric="top1", value=50.0).to_dict()
    row.update(fields)
    return json.dumps(row)


@pytest.mark.parametrize("line,needle", [
    ("{oops", "not a valid result row"),
    (_row(value="high"), "'value' must be a number"),
    (_row(extra="layer=3"), "'extra' must be an object"),
    (_row(colour="red"), "unknown fields"),
], ids=["not-json", "value-text", "extra-text", "unknown-field"])
def test_malformed_results_are_refused_naming_file_and_line(tmp_path, capsys, line, needle):
    run = _raw(tmp_path / "run", [_row(), line])
    out = tmp_path / "report.html"
    out.write_text("earlier report")
    assert main([str(run), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "results.jsonl:2" in err and needle in err and "Traceback" not in err
    assert out.read_text() == "earlier report"  # nothing lost


def test_nan_row_is_shown_failed_not_compared(tmp_path):
    run = _raw(tmp_path / "run", [_row(encoder="o", role="original"), _row(encoder="p", role="pivot", base="o").replace('"value": 50.0', '"value": NaN')])
    html = build_report([run], tmp_path / "r.html").read_text()
    assert "is not a finite number" in html and "NaN" not in re.sub(r"<[^>]+>", "", html).split("Skipped and failed rows")[0].split("Summary")[-1].replace("is not a finite number", "")


def test_missing_run_and_unwritable_output_are_usage_errors(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "-o", str(tmp_path / "r.html")]) == 2
    assert "nope" in capsys.readouterr().err
    run = _raw(tmp_path / "run", [_row()])
    (tmp_path / "outdir").mkdir()
    assert main([str(run), "-o", str(tmp_path / "outdir")]) == 2
    err = capsys.readouterr().err
    assert "outdir" in err and "-o" in err and "Traceback" not in err
