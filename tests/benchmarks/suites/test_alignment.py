"""The align suite end to end: vision-language rows with a tiny LM, lineage CKA per block, skipped rows."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import run
from benchmarks.results import read_frame

from .conftest import DATA, write_tiny_lm


def _run(tmp_path, manifest, *extra):
    return run.main(["--encoders", str(manifest), "--data", DATA, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                     "--workers", "0", "--no-report", "--suite", "align", *extra])


def test_align_rows_with_the_lineage_lm(tmp_path, mllm_lineage):
    manifest = mllm_lineage
    assert _run(tmp_path, manifest) == 0
    frame = read_frame(tmp_path / "run")
    assert (frame.status == "ok").all(), frame[["status", "reason"]]
    vl = frame[frame.task == "vision_language"]
    assert set(vl.metric) == {"mutual_knn_k10", "cka_linear"} and set(vl.encoder) == {"orig", "tuned"}
    assert {extra["lm"] for extra in vl.extra} == {str(mllm_lineage.parent / "mllm_orig" / "lm")}  # the original's LM for both
    knn = vl[vl.metric == "mutual_knn_k10"]
    assert knn.value.between(0, 1).all() and (knn.n == 24).all()
    for _, row in knn.iterrows():
        assert np.load(tmp_path / "run" / row.per_item).mean() == pytest.approx(row.value)
    lineage = frame[frame.task == "lineage"]
    assert set(lineage.encoder) == {"tuned"} and sorted(e["layer"] for e in lineage.extra) == [0, 1]
    assert lineage.value.between(0, 1 + 1e-9).all() and (lineage.ci_low <= lineage.value + 1e-9).all()


def test_align_lm_option_overrides_and_missing_lm_is_a_skipped_row(tmp_path, plain_lineage):
    manifest = plain_lineage
    assert _run(tmp_path, manifest) == 0
    frame = read_frame(tmp_path / "run")
    vl = frame[frame.task == "vision_language"]
    assert (vl.status == "skipped").all() and vl.reason.str.contains("--align-lm").all()
    assert (frame[frame.task == "lineage"].status == "ok").all()
    lm = write_tiny_lm(tmp_path / "other_lm", ["a large red circle with a blue star", "a small green ring"])
    assert _run(tmp_path, manifest, "--align-lm", str(lm)) == 0
    vl = read_frame(tmp_path / "run").query("task == 'vision_language'")
    assert (vl.status == "ok").all() and {e["lm"] for e in vl.extra} == {str(lm)}
