"""benchmarks.check: the regression gate's verdicts, exit codes, baseline round trip, usage errors,
and the CI workflow that calls it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.check import BASELINE_FORMAT, main
from benchmarks.results import ResultRow, append_rows

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "checkpoint-regression.yml"


def _rows(encoder: str = "enc", top1: float = 70.0, top1_ci: float = 2.0, loss: float = 0.5,
          miou: float | None = 40.0, extra_rows: tuple = ()) -> list[ResultRow]:
    ident = {"encoder": encoder, "role": "pivot", "base": "orig", "weights_hash": f"hash-{encoder}"}
    rows = [
        ResultRow(**ident, suite="cls", task="linear", dataset="tiny", metric="top1", value=top1,
                  ci_low=top1 - top1_ci, ci_high=top1 + top1_ci, n=500),
        ResultRow(**ident, suite="seg", task="linear_head", dataset="ade", metric="loss", value=loss,
                  higher_is_better=False),
    ]
    for layer, value in enumerate((0.9, 0.8)):
        rows.append(ResultRow(**ident, suite="align", task="cka", dataset="tiny", metric="cka", value=value,
                              variant=f"layer={layer}", extra={"layer": layer}))
    if miou is not None:
        rows.append(ResultRow(**ident, suite="seg", task="probe", dataset="ade", metric="miou", value=miou))
    return rows + list(extra_rows)


def _run(path: Path, rows: list[ResultRow]) -> Path:
    append_rows(path, rows)
    return path


@pytest.fixture
def baseline(tmp_path) -> Path:
    run = _run(tmp_path / "base_run", _rows())
    path = tmp_path / "ci" / "baseline.json"
    assert main(["--results", str(run), "--write-baseline", str(path)]) == 0
    return path


def _verdicts(out: str, verdict: str) -> list[str]:
    """Table lines (not the summary) whose verdict column is ``verdict``."""
    return [line for line in out.splitlines() if f"  {verdict}" in line and not line.startswith(("PASS", "FAIL"))]


def _check(tmp_path, baseline, rows, *args) -> int:
    run = _run(tmp_path / "new_run", rows)
    return main(["--results", str(run), "--baseline", str(baseline), *args])


def test_write_baseline_roundtrip(tmp_path, baseline, capsys):
    document = json.loads(baseline.read_text())
    assert document["format"] == BASELINE_FORMAT and document["encoder"] == "enc"
    assert document["weights_hash"] == "hash-enc"
    entries = {(e["suite"], e["task"], e["metric"], e["variant"]): e for e in document["entries"]}
    assert len(entries) == 5
    top1 = entries[("cls", "linear", "top1", "")]
    assert top1["value"] == 70.0 and top1["ci_low"] == 68.0 and top1["higher_is_better"] is True
    assert top1["encoder"] == "enc" and top1["weights_hash"] == "hash-enc" and top1["n"] == 500
    assert ("align", "cka", "cka", "layer=1") in entries
    capsys.readouterr()
    # The run it was written from passes against it.
    assert main(["--results", str(tmp_path / "base_run"), "--baseline", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "PASS: 5 ok" in out and "REGRESSION" not in out


def test_write_baseline_flag_uses_baseline_path(tmp_path):
    run = _run(tmp_path / "run", _rows())
    target = tmp_path / "b.json"
    assert main(["--results", str(run), "--baseline", str(target), "--write-baseline"]) == 0
    assert json.loads(target.read_text())["entries"]


def test_planted_regression_is_caught(tmp_path, baseline, capsys):
    assert _check(tmp_path, baseline, _rows(top1=60.0)) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("cls/linear/tiny/top1"))
    assert "REGRESSION" in line and "-10" in line
    assert "FAIL" in out


def test_drop_inside_the_confidence_interval_is_not_a_regression(tmp_path, baseline, capsys):
    assert _check(tmp_path, baseline, _rows(top1=69.0)) == 0  # new CI [67, 71] contains 70
    assert "within noise" in capsys.readouterr().out


def test_improvement_is_not_flagged(tmp_path, baseline, capsys):
    assert _check(tmp_path, baseline, _rows(top1=80.0, loss=0.3)) == 0
    out = capsys.readouterr().out
    assert len(_verdicts(out, "improved")) == 2 and "REGRESSION" not in out


def test_lower_is_better_metric(tmp_path, baseline, capsys):
    assert _check(tmp_path, baseline, _rows(loss=0.7)) == 1
    assert "seg/linear_head/ade/loss" in capsys.readouterr().out


def test_missing_metric_fails(tmp_path, baseline, capsys):
    assert _check(tmp_path, baseline, _rows(miou=None)) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "seg/probe/ade/miou" in out


@pytest.mark.parametrize("status", ["skipped", "failed"])
def test_skipped_or_failed_row_fails(tmp_path, baseline, capsys, status):
    broken = ResultRow(encoder="enc", suite="seg", task="probe", dataset="ade", metric="miou", value=None,
                       status=status, reason="no ADE20K here")
    assert _check(tmp_path, baseline, _rows(miou=None, extra_rows=(broken,))) == 1
    out = capsys.readouterr().out
    assert status.upper() in out and "no ADE20K here" in out


def test_tolerance_per_metric_and_default(tmp_path, baseline):
    rows = _rows(loss=0.55)  # worse by 0.05, no CI
    assert _check(tmp_path, baseline, rows) == 1
    assert main(["--results", str(tmp_path / "new_run"), "--baseline", str(baseline), "--tolerance", "loss=0.05"]) == 0
    assert main(["--results", str(tmp_path / "new_run"), "--baseline", str(baseline), "--tolerance", "loss=0.04"]) == 1
    assert main(["--results", str(tmp_path / "new_run"), "--baseline", str(baseline), "--tolerance", "*=0.1"]) == 0
    assert main(["--results", str(tmp_path / "new_run"), "--baseline", str(baseline), "--tolerance", "top1=5"]) == 1


def test_per_layer_entries_compared_separately(tmp_path, baseline, capsys):
    rows = [row for row in _rows() if row.extra.get("layer") != 1]
    rows.append(ResultRow(encoder="enc", suite="align", task="cka", dataset="tiny", metric="cka", value=0.5,
                          variant="layer=1", extra={"layer": 1}))
    assert _check(tmp_path, baseline, rows) == 1
    out = capsys.readouterr().out
    (line,) = _verdicts(out, "REGRESSION")
    assert "[layer=1]" in line


def test_new_metrics_are_listed_but_do_not_fail(tmp_path, baseline, capsys):
    extra = ResultRow(encoder="enc", suite="vqa", task="general", dataset="lmms", metric="acc", value=1.0)
    assert _check(tmp_path, baseline, _rows(extra_rows=(extra,))) == 0
    assert "not in the baseline" in capsys.readouterr().out


def test_encoder_selection(tmp_path, baseline, capsys):
    run = _run(tmp_path / "multi", _rows(encoder="other", top1=10.0) + _rows(encoder="third"))
    # Several encoders, none named like the baseline's: usage error listing them.
    assert main(["--results", str(run), "--baseline", str(baseline)]) == 2
    err = capsys.readouterr().err
    assert "'other'" in err and "'third'" in err and "--encoder" in err
    assert main(["--results", str(run), "--baseline", str(baseline), "--encoder", "third"]) == 0
    assert main(["--results", str(run), "--baseline", str(baseline), "--encoder", "other"]) == 1
    assert main(["--results", str(run), "--baseline", str(baseline), "--encoder", "nope"]) == 2
    # The baseline's own encoder is picked when present.
    _run(run, _rows(encoder="enc"))
    assert main(["--results", str(run), "--baseline", str(baseline)]) == 0


def test_usage_errors_name_the_file_and_the_fix(tmp_path, baseline, capsys):
    assert main(["--results", str(tmp_path / "nowhere"), "--baseline", str(baseline)]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "benchmarks.run" in err
    run = _run(tmp_path / "run", _rows())
    assert main(["--results", str(run), "--baseline", str(tmp_path / "absent.json")]) == 2
    err = capsys.readouterr().err
    assert "absent.json" in err and "--write-baseline" in err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["--results", str(run), "--baseline", str(tmp_path / "bad.json")]) == 2
    (tmp_path / "other.json").write_text(json.dumps({"entries": []}))
    assert main(["--results", str(run), "--baseline", str(tmp_path / "other.json")]) == 2
    assert main(["--results", str(run), "--baseline", str(baseline), "--tolerance", "top1"]) == 2
    assert main(["--results", str(run), "--baseline", str(baseline), "--tolerance", "top1=-1"]) == 2
    assert main(["--results", str(run)]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--baseline", str(baseline)])  # --results missing: argparse
    assert exit_info.value.code == 2


def test_workflow_runs_the_gate():
    text = WORKFLOW.read_text()
    for command in ("make setup", "-m benchmarks.run --encoder \"$CKPT\" --suite all --out",
                    "-m benchmarks.check --results", "--baseline ci/baseline.json", "actions/upload-artifact",
                    "python-version: \"3.11\""):
        assert command in text, command
    yaml = pytest.importorskip("yaml", reason="pyyaml not installed: YAML syntax of the workflow not checked")
    workflow = yaml.safe_load(text)
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert "pull_request" in triggers and "checkpoint" in triggers["workflow_dispatch"]["inputs"]
    steps = workflow["jobs"]["regression"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert any("-m benchmarks.check" in run for run in runs)
    assert runs.index(next(r for r in runs if "-m benchmarks.run" in r)) < runs.index(next(r for r in runs if "-m benchmarks.check" in r))
    assert "CI_CHECKPOINT" in workflow["jobs"]["regression"]["if"], "pull requests are gated only once a checkpoint is configured"
    upload = next(step for step in steps if "upload-artifact" in step.get("uses", ""))
    assert "report.html" in upload["with"]["path"] and upload["if"]
