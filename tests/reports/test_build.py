"""reports.build: a self-contained, escaped HTML report with tables, significance marks, figures,
galleries and provenance, from generated run directories."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from benchmarks.results import ResultRow, append_rows
from reports.build import build_report, main
from reports.compare import SIG_CI, SIG_PAIRED, lineage_table
from reports.load import PerItemCache, load_runs
from tests.reports.conftest import EVIL, make_single_run


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict]]:
    parser = _Collector()
    parser.feed(html)
    return parser.tags


@pytest.fixture(scope="module")
def report(built_report) -> tuple[Path, str, Path, Path]:
    out, lineage, single = built_report
    return out, out.read_text(encoding="utf-8"), lineage, single


def test_report_is_self_contained(report):
    path, html, _, _ = report
    assert path.is_file() and html.startswith("<!DOCTYPE html>")
    for needle in ("http://", "https://", "//cdn"):
        assert needle not in html
    tags = _tags(html)
    for tag, attrs in tags:
        for name in ("src", "href"):
            if name in attrs:
                value = attrs[name]
                assert value.startswith("data:") or value.startswith("#"), f"<{tag} {name}={value[:40]}>"
    assert not any(tag in ("script", "link", "iframe", "object", "embed") for tag, _ in tags)


def test_user_strings_are_escaped(report):
    _, html, _, _ = report
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html  # a failure reason
    assert "<img src=x>" not in html  # a config value (encoder family)


def test_summary_tables_one_per_lineage_with_roles_in_order(report):
    _, html, _, _ = report
    assert html.count('<table class="summary">') >= 2
    assert "Lineage vit-orig" in html and "Lineage &lt;script&gt;" in html
    section = html[html.index('<section id="lineage-1">'):]
    header = section[: section.index("</thead>")]
    assert re.findall(r"<th>([^<]+)<br>", header) == ["vit-orig", "vit-sft", "vit-pivot"]


def test_significance_marks_paired_and_ci(report):
    _, _, lineage_dir, _ = report
    data = load_runs([lineage_dir])
    (lineage,) = data.lineages
    names = [info.name for info in lineage.encoders]
    assert names == ["vit-orig", "vit-sft", "vit-pivot"]
    lines = {(line.suite, line.task): line for line in lineage_table(lineage, PerItemCache(), n_boot=500)}
    cls = lines[("cls", "linear")]
    original, sft, pivot = cls.cells
    assert original.delta is None
    # Identical per-item vectors: delta 0, paired test run, not significant.
    assert sft.test == SIG_PAIRED and sft.delta == pytest.approx(0.0) and not sft.significant
    # +20 points on the same 400 items: significant, better.
    assert pivot.test == SIG_PAIRED and pivot.significant and pivot.better is True
    assert pivot.delta == pytest.approx(20.0)
    assert pivot.delta_ci[0] > 0
    # No per-item files: falls back to comparing CIs; [30, 32] overlaps [29, 31].
    seg = lines[("seg", "patch_probe")]
    assert seg.cells[1].test == SIG_CI and not seg.cells[1].significant
    # Lower is better: loss went down -> good.
    loss = lines[("seg", "linear_head")]
    assert loss.cells[2].delta < 0 and loss.cells[2].better is True


def test_significance_mark_rendered_only_for_the_real_difference(report):
    _, html, _, _ = report
    assert re.search(r"&Delta; \+20\.00\*", html)
    cls_row = html[html.index("<td>cls</td><td>linear"):]
    cls_row = cls_row[: cls_row.index("</tr>")]
    assert len(re.findall(r"&Delta; [^<]*\*", cls_row)) == 1  # pivot only, not the identical sft
    assert "paired bootstrap" in html and "Holm" in html  # the legend says what * means and the correction


def test_figures_and_galleries_embedded(report):
    _, html, _, _ = report
    images = [attrs for tag, attrs in _tags(html) if tag == "img"]
    assert len(images) >= 8
    assert all(attrs["src"].startswith("data:image/") for attrs in images)
    assert "CKA vs layer" in html
    assert "<strong>VQA.</strong>" in html
    gallery = html[html.index("<h4>loc / gradcam</h4>"):]
    captions = re.findall(r"<figcaption><strong>([^<]+)</strong>", gallery[: gallery.index("</div>")])
    assert captions == ["vit-orig", "vit-sft", "vit-pivot"]


def test_provenance_and_skipped_rows(report):
    _, html, lineage_dir, single_dir = report
    for text in ("sha256-vit-pivot", "/ckpt/vit-sft.safetensors", "vit_tiny_patch16_224", "stripped_prefix",
                 "Demo size: 400 items", "total_s", "features_s=1.50", "2.14.1", str(lineage_dir), str(single_dir)):
        assert text in html, text
    not_ok = html[html.index('<table class="not-ok">'):]
    not_ok = not_ok[: not_ok.index("</table>")]
    assert "lmms-eval results file not found under vqa_results/" in not_ok
    assert "CUDA out of memory &amp; &lt;b&gt;bold&lt;/b&gt;" in not_ok
    assert not_ok.count("<tr") == 3  # header + 2 rows


def test_multiple_runs_duplicates_later_wins(tmp_path):
    first = make_single_run(tmp_path / "first", name="lone")
    second = tmp_path / "second"
    append_rows(second, [ResultRow(encoder="lone", suite="cls", task="knn", dataset="imagenet-tiny",
                                   metric="top1", value=55.5)])
    html = build_report([first, second], tmp_path / "r.html").read_text()
    assert "55.50" in html and "42.00" not in html
    assert "appear in several runs" in html and str(first) in html and str(second) in html


def test_missing_results_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty_run.*results.jsonl"):
        build_report([empty], tmp_path / "r.html")
    assert main([str(empty), "-o", str(tmp_path / "r.html")]) == 2
    assert "results.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_cli_and_unsafe_figures(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "evil.svg").write_text("<svg onload='alert(1)'></svg>")
    (tmp_path / "outside.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    append_rows(run, [
        ResultRow(encoder="e", suite="loc", task="gradcam", dataset="d", metric="iou", value=1.0,
                  extra={"figure": "figures/evil.svg"}),
        ResultRow(encoder="e", suite="loc", task="gradcam", dataset="d", metric="pg", value=1.0,
                  extra={"figure": ["../outside.png", "figures/missing.png"]}),
    ])
    np.save(run / "unused.npy", np.ones(3))
    assert main([str(run), "-o", str(tmp_path / "r.html"), "--title", "T"]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "onload" not in html and "data:image/svg" not in html
    assert "not a PNG or JPEG" in html and "outside the run directory" in html and "file not found" in html
    assert "wrote" in capsys.readouterr().out


def test_robust_to_sparse_and_odd_inputs(tmp_path):
    run = tmp_path / "odd"
    append_rows(run, [
        ResultRow(encoder="a", suite="align", task="cka", dataset="d", metric="linear_cka", value=0.5,
                  extra={"layer": "penultimate"}),
        ResultRow(encoder="a", suite="align", task="cka", dataset="d", metric="linear_cka", value=0.7,
                  extra={"layer": 3}),
        ResultRow(encoder="b", role="sft", base="a", suite="align", task="cka", dataset="d", metric="linear_cka",
                  value=0.6, extra={"layer": 3, "timings": {}}),
        ResultRow(encoder="b", role="sft", base="a", suite="cls", task="t", dataset="d", metric="m", value=1.0,
                  per_item="per_item/missing.npy"),
        ResultRow(encoder="a", suite="cls", task="t", dataset="d", metric="m", value=2.0, per_item="../x.npy"),
    ])
    (run / "config.json").write_text("[1, 2")  # truncated file: reported, not fatal
    html = build_report([run], tmp_path / "r.html").read_text()
    assert "config.json: unreadable" in html
    assert "Per-layer rows (2)" in html and "CKA vs layer" in html
    assert "&Delta; -1.00" in html  # delta shown, untested (no per-item file, no CIs)
    assert "could not be drawn" not in html
