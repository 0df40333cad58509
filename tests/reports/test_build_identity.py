"""Reports never merge different things silently: one encoder name with two sets of weights stays two
encoders; an empty results file, or -o naming a directory, is a usage error that writes nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.results import ResultRow, append_rows
from reports.build import build_report, main
from reports.load import load_runs

HASH_A = "3f2a9c" + "0" * 58
HASH_B = "8b1e07" + "1" * 58


def _rows(name: str, weights: str, value: float, role: str = "", base: str = "") -> list[ResultRow]:
    common = {"encoder": name, "role": role, "base": base, "weights_hash": weights, "checkpoint": f"/ckpt/{name}-{weights[:4]}.pt"}
    return [ResultRow(**common, suite="cls", task="knn20", dataset="d", metric="top1", value=value, ci_low=value - 1, ci_high=value + 1, n=100),
            ResultRow(**common, suite="seg", task="patch_probe", dataset="d", metric="recall", value=value / 2, n=100)]


def _run(path: Path, rows: list[ResultRow], encoders: list[dict] | None = None) -> Path:
    append_rows(path, rows)
    if encoders is not None:
        (path / "config.json").write_text(json.dumps({"encoders": encoders}))
    return path


def test_one_name_two_weights_stays_two_encoders(tmp_path, capsys):
    first = _run(tmp_path / "first", _rows("vit", HASH_A, 70.0), [{"name": "vit", "weights_hash": HASH_A, "arch": "arch-a"}])
    second = _run(tmp_path / "second", _rows("vit", HASH_B, 60.0), [{"name": "vit", "weights_hash": HASH_B, "arch": "arch-b"}])
    data = load_runs([first, second])
    assert [info.name for info in data.encoders] == ["vit@3f2a9c", "vit@8b1e07"]
    assert [info.weights_hashes for info in data.encoders] == [[HASH_A], [HASH_B]]
    assert [info.config.get("arch") for info in data.encoders] == ["arch-a", "arch-b"]
    assert data.duplicates == []  # nothing was dropped: both values are kept
    assert sorted(item.row.value for item in data.rows if item.row.metric == "top1") == [60.0, 70.0]
    assert main([str(first), str(second), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "vit@3f2a9c" in html and "vit@8b1e07" in html and "70.00" in html and "60.00" in html
    assert "stands for 2 different weights" in html


def test_a_renamed_original_keeps_its_descendants_in_each_run(tmp_path):
    first = _run(tmp_path / "first", _rows("vit", HASH_A, 70.0, role="original") + _rows("vit-dpo", "c" * 64, 72.0, role="pivot", base="vit"))
    second = _run(tmp_path / "second", _rows("vit", HASH_B, 60.0, role="original") + _rows("vit-sft", "d" * 64, 61.0, role="sft", base="vit"))
    data = load_runs([first, second])
    lineages = {lineage.name: [info.name for info in lineage.encoders] for lineage in data.lineages}
    assert lineages == {"vit@3f2a9c": ["vit@3f2a9c", "vit-dpo"], "vit@8b1e07": ["vit@8b1e07", "vit-sft"]}


def test_hashes_sharing_a_prefix_get_longer_suffixes(tmp_path):
    first = _run(tmp_path / "first", _rows("vit", "abcdef" + "1" * 58, 70.0))
    second = _run(tmp_path / "second", _rows("vit", "abcdef" + "2" * 58, 60.0))
    assert sorted(info.name for info in load_runs([first, second]).encoders) == ["vit@abcdef1", "vit@abcdef2"]


def test_rows_that_cannot_be_attributed_are_refused_with_the_fix(tmp_path, capsys):
    mixed = _run(tmp_path / "mixed", _rows("vit", HASH_A, 70.0) + [ResultRow(encoder="vit", suite="vqa", task="t", dataset="d", metric="m", value=None, status="failed", reason="x")]
                 + _rows("vit", HASH_B, 60.0))
    out = tmp_path / "r.html"
    assert main([str(mixed), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "encoder name 'vit' stands for 2 different weights" in err and "give the encoders distinct names" in err
    assert not out.exists() and not out.with_name("r.html.tmp").exists()


def test_the_same_weights_in_two_runs_are_still_one_encoder(tmp_path):
    first = _run(tmp_path / "first", _rows("vit", HASH_A, 70.0))
    second = _run(tmp_path / "second", _rows("vit", HASH_A, 71.0))
    data = load_runs([first, second])
    assert [info.name for info in data.encoders] == ["vit"] and len(data.duplicates) == 2 and data.renamed == []


@pytest.mark.parametrize("content", ["", "\n\n"], ids=["empty", "blank-lines"])
def test_an_empty_results_file_is_refused_like_check_does(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(content)
    out = tmp_path / "r.html"
    assert main([str(run), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reports.build: error: ") and "\n" not in err
    assert f"{run / 'results.jsonl'}: the run has no result rows" in err and "benchmarks.run" in err
    assert not out.exists()
    from benchmarks.check import main as check_main

    assert check_main(["--results", str(run), "--write-baseline", str(tmp_path / "b.json")]) == 2
    assert "the run has no result rows" in capsys.readouterr().err


def test_one_empty_run_among_several_is_named(tmp_path, capsys):
    good = _run(tmp_path / "good", _rows("vit", HASH_A, 70.0))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "results.jsonl").write_text("")
    assert main([str(good), str(empty), "-o", str(tmp_path / "r.html")]) == 2
    assert str(empty / "results.jsonl") in capsys.readouterr().err


def test_out_naming_a_directory_is_a_usage_error_without_a_stray_tmp(tmp_path, capsys):
    run = _run(tmp_path / "run", _rows("vit", HASH_A, 70.0))
    target = tmp_path / "reports"
    target.mkdir()
    assert main([str(run), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"-o {target}: is a directory" in err and str(target / "report.html") in err
    assert not (tmp_path / "reports.tmp").exists() and list(target.iterdir()) == []
    with pytest.raises(ValueError, match="is a directory"):
        build_report([run], target)


def test_a_failed_write_leaves_no_tmp_file(tmp_path, monkeypatch):
    run = _run(tmp_path / "run", _rows("vit", HASH_A, 70.0))
    out = tmp_path / "r.html"
    out.write_text("previous report")

    def refuse(self, target):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(PermissionError):
        build_report([run], out)
    assert out.read_text() == "previous report" and not (tmp_path / "r.html.tmp").exists()
