"""The regression gate cannot be fooled: NaN/Inf, broken results and baselines, a mistyped
--tolerance, and one-image noise in top-5."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.check import main
from benchmarks.results import ResultRow, append_rows
from evidence.stats import bootstrap_ci


def _row(metric="top1", value=70.0, ci=2.0, **extra) -> ResultRow:
    return ResultRow(encoder="enc", suite="cls", task="linear", dataset="tiny", metric=metric, value=value,
                     ci_low=None if ci is None else value - ci, ci_high=None if ci is None else value + ci, n=500, **extra)


def _run(path: Path, rows) -> Path:
    append_rows(path, rows)
    return path


def _raw_run(path: Path, lines: list[str]) -> Path:
    path.mkdir(parents=True)
    (path / "results.jsonl").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def baseline(tmp_path) -> Path:
    path = tmp_path / "baseline.json"
    assert main(["--results", str(_run(tmp_path / "base", [_row(), _row("top5", 90.0)])), "--write-baseline", str(path)]) == 0
    return path


def _line(**fields) -> str:
    row = _row().to_dict()
    row.update(fields)
    return json.dumps(row)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_new_value_fails_naming_the_metric(tmp_path, baseline, capsys, value):
    run = _raw_run(tmp_path / "new", [_line().replace('"value": 70.0', f'"value": {value}'), _line(metric="top5", value=90.0)])
    assert main(["--results", str(run), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "'top1'" in out and "not a finite number" in out
    assert "ok" not in [line.split()[-1] for line in out.splitlines() if "/top1" in line]


def test_non_finite_baseline_fails(tmp_path, baseline, capsys):
    document = json.loads(baseline.read_text())
    document["entries"][0]["value"] = float("nan")
    baseline.write_text(json.dumps(document))
    run = _run(tmp_path / "new", [_row(), _row("top5", 90.0)])
    assert main(["--results", str(run), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "baseline value" in out and "--write-baseline" in out


def test_write_baseline_refuses_non_finite_and_keeps_the_old_one(tmp_path, baseline, capsys):
    before = baseline.read_text()
    run = _raw_run(tmp_path / "nan_run", [_line().replace('"value": 70.0', '"value": NaN')])
    assert main(["--results", str(run), "--write-baseline", str(baseline)]) == 2
    err = capsys.readouterr().err
    assert "refusing to write baseline" in err and "cls/linear/tiny/top1" in err and "= nan" in err and "rerun" in err
    assert baseline.read_text() == before and not baseline.with_name(baseline.name + ".tmp").exists()


def test_tolerance_for_unknown_metric_is_a_usage_error(tmp_path, baseline, capsys):
    run = _run(tmp_path / "new", [_row(), _row("top5", 90.0)])
    assert main(["--results", str(run), "--baseline", str(baseline), "--tolerance", "top_1=0.5"]) == 2
    err = capsys.readouterr().err
    assert "--tolerance" in err and "'top_1'" in err and "top1, top5" in err and "*=ABS" in err
    assert main(["--results", str(run), "--baseline", str(baseline), "--tolerance", "*=0.5"]) == 0


@pytest.mark.parametrize("bad_line,needle", [
    ("{not json", "results.jsonl:1"),
    (_line(value="seventy"), "'value' must be a number"),
    (_line(extra=[1, 2]), "'extra' must be an object"),
    (_line(metric=5), "'metric' must be a string"),
    ("[1, 2, 3]", "JSON object"),
], ids=["not-json", "value-string", "extra-list", "metric-number", "not-an-object"])
def test_malformed_results_are_usage_errors_naming_the_line(tmp_path, baseline, capsys, bad_line, needle):
    run = _raw_run(tmp_path / "new", [bad_line])
    assert main(["--results", str(run), "--baseline", str(baseline)]) == 2
    err = capsys.readouterr().err
    assert "results.jsonl:1" in err and needle in err


@pytest.mark.parametrize("content,needle", [
    ("not json", "not readable as JSON"),
    ('{"format": "other"}', "not a baseline file"),
    ('{"format": "vision-encoder-eval/baseline", "format_version": 99}', "format_version 99"),
    ('{"format": "vision-encoder-eval/baseline", "format_version": 1, "entries": [{"suite": "cls"}]}', '"entries" must be a list'),
], ids=["not-json", "wrong-format", "future-version", "entries-incomplete"])
def test_broken_baseline_is_a_usage_error(tmp_path, capsys, content, needle):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    run = _run(tmp_path / "new", [_row()])
    assert main(["--results", str(run), "--baseline", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and needle in err


def test_write_baseline_into_a_directory_is_a_usage_error_that_leaves_no_stray_tmp(tmp_path, capsys):
    (tmp_path / "dir").mkdir()
    run = _run(tmp_path / "new", [_row()])
    assert main(["--results", str(run), "--write-baseline", str(tmp_path / "dir")]) == 2
    assert f"{tmp_path / 'dir'}: is a directory; pass --write-baseline a file path" in capsys.readouterr().err
    assert not (tmp_path / "dir.tmp").exists() and list((tmp_path / "dir").iterdir()) == []


def test_a_failed_baseline_write_leaves_no_tmp_file(tmp_path, capsys, monkeypatch):
    run = _run(tmp_path / "new", [_row()])

    def refuse(self, target):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(Path, "replace", refuse)
    assert main(["--results", str(run), "--write-baseline", str(tmp_path / "b.json")]) == 2
    assert "cannot write the baseline" in capsys.readouterr().err
    assert not (tmp_path / "b.json.tmp").exists() and not (tmp_path / "b.json").exists()


def test_top5_noise_of_one_image_does_not_fail_the_gate(tmp_path, capsys):
    rng = np.random.default_rng(0)
    scores = (rng.random(200) < 0.8).astype(float)
    noisier = scores.copy()
    noisier[np.flatnonzero(scores)[0]] = 0.0  # one image fewer in the top 5
    for name, values in (("base", scores), ("new", noisier)):
        low, high = bootstrap_ci(values, scale=100.0, n_boot=500)
        _run(tmp_path / name, [ResultRow(encoder="enc", suite="cls", task="linear", dataset="tiny", metric="top5",
                                         value=float(values.mean() * 100), ci_low=low, ci_high=high, n=200)])
    assert main(["--results", str(tmp_path / "base"), "--write-baseline", str(tmp_path / "b.json")]) == 0
    assert main(["--results", str(tmp_path / "new"), "--baseline", str(tmp_path / "b.json")]) == 0
    assert "within noise" in capsys.readouterr().out


def test_baseline_that_is_a_directory_says_so(tmp_path, baseline, capsys):
    run = _run(tmp_path / "new", [_row(), _row("top5", 90.0)])
    folder = tmp_path / "baselines"
    folder.mkdir()
    assert main(["--results", str(run), "--baseline", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{folder}: is a directory, not a baseline file" in err and str(folder / "baseline.json") in err
    assert "not found" not in err and "--write-baseline" not in err and "\n" not in err


def test_one_encoder_name_with_two_weights_is_not_checked_as_one(tmp_path, baseline, capsys):
    run = _run(tmp_path / "new", [_row(weights_hash="sha256-aaa"), _row("top5", 90.0, weights_hash="sha256-bbb")])
    for argv in (["--baseline", str(baseline)], ["--write-baseline", str(tmp_path / "b2.json")]):
        assert main(["--results", str(run), *argv]) == 2
        err = capsys.readouterr().err
        assert "'enc' has rows from 2 different weights" in err and "rerun into a fresh --out" in err
    assert not (tmp_path / "b2.json").exists()
