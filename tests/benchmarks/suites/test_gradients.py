"""The grad suite end to end on a tiny lineage with MLLM directories: the shapes world's objects, and
MMPR-style preference items with and without regions."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import run
from benchmarks.results import read_frame
from tests.imagesets.real_layouts import write_prefs

from .conftest import DATA


def _run(tmp_path, manifest, *extra):
    return run.main(["--encoders", str(manifest), "--data", DATA, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                     "--workers", "0", "--no-report", "--suite", "grad", "--grad-items", "6", *extra])


def test_grad_rows_for_each_mllm_with_paired_dpo_minus_sft(tmp_path, mllm_lineage):
    manifest = mllm_lineage
    assert _run(tmp_path, manifest) == 0
    frame = read_frame(tmp_path / "run")
    assert (frame.status == "ok").all(), frame[["metric", "status", "reason"]]
    assert set(frame.encoder) == {"orig", "tuned"} and set(frame.task) == {"projector_output", "encoder_output"}
    metrics = set(frame.metric)
    for loss in ("sft", "dpo"):
        assert {f"{loss}_inside_mass", f"{loss}_entropy", f"{loss}_gini", f"{loss}_zero_gradients"} <= metrics
    assert {"dpo_minus_sft_inside_mass", "dpo_minus_sft_entropy", "dpo_minus_sft_gini"} <= metrics
    scored = frame[frame.metric.str.match(r"(sft|dpo)_(inside_mass|entropy|gini)")]
    assert scored.value.between(0, 1).all() and (scored.n == 6).all()
    assert (frame[frame.metric.str.endswith("zero_gradients")].value == 0).all()
    for _, row in scored.iterrows():
        assert np.load(tmp_path / "run" / row.per_item).mean() == pytest.approx(row.value)
    delta = frame[(frame.metric == "dpo_minus_sft_inside_mass") & (frame.task == "projector_output")]
    for _, row in delta.iterrows():
        sft = frame[(frame.encoder == row.encoder) & (frame.task == row.task) & (frame.metric == "sft_inside_mass")].value.item()
        dpo = frame[(frame.encoder == row.encoder) & (frame.task == row.task) & (frame.metric == "dpo_inside_mass")].value.item()
        assert row.value == pytest.approx(dpo - sft) and row.ci_low <= row.value <= row.ci_high
        # Per-item differences: what the report's paired and replicate-aware tests compare.
        assert np.load(tmp_path / "run" / row.per_item).mean() == pytest.approx(row.value)
    references = {row.encoder: row.extra["reference"] for _, row in frame.iterrows()}
    assert references["orig"] == "the policy itself" and references["tuned"].endswith("mllm_orig")
    figure = frame[(frame.metric == "sft_inside_mass") & (frame.task == "projector_output")].extra.iloc[0]["figure"]
    assert (tmp_path / "run" / figure).read_bytes().startswith(b"\x89PNG")


def test_grad_without_an_mllm_is_a_usage_error_when_named_and_a_skipped_row_under_all(tmp_path, plain_lineage, capsys):
    assert _run(tmp_path, plain_lineage) == 2
    assert "--suite grad: no encoder of the run has an MLLM" in capsys.readouterr().err
    assert run.main(["--encoders", str(plain_lineage), "--data", DATA, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                     "--workers", "0", "--no-report", "--suite", "all", "--suite", "grad"]) == 2  # named, even beside all
    assert run.main(["--encoders", str(plain_lineage), "--data", DATA, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                     "--workers", "0", "--no-report", "--suite", "all", "--seg-protocols", "patch_probe", "--seg-epochs", "1", "--seg-min-steps", "0", "--seg-seeds", "1",
                     "--linear-epochs", "1", "--loc-items", "4"]) == 0
    frame = read_frame(tmp_path / "run")
    grad = frame[frame.suite == "grad"]
    assert len(grad) == 2 and (grad.status == "skipped").all() and grad.reason.str.contains("mllm directory in the manifest").all()


def _grad_on(tmp_path, manifest, data, *extra):
    return run.main(["--encoders", str(manifest), "--data", data, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                     "--workers", "0", "--no-report", "--suite", "grad", "--grad-items", "0", *extra])


def test_grad_on_region_less_preference_items_reports_concentration_and_skips_the_inside_mass(tmp_path, mllm_lineage):
    prefs = write_prefs(tmp_path / "mmpr", n=8, regions=False)
    assert _grad_on(tmp_path, mllm_lineage, f"prefs:file={prefs}") == 0
    frame = read_frame(tmp_path / "run")
    assert set(frame.encoder) == {"orig", "tuned"} and set(frame.task) == {"projector_output", "encoder_output"}
    ok, skipped = frame[frame.status == "ok"], frame[frame.status == "skipped"]
    concentration = {f"{loss}_{name}" for loss in ("sft", "dpo", "dpo_minus_sft") for name in ("entropy", "gini")}
    assert concentration <= set(ok.metric)
    scored = ok[ok.metric.str.match(r"(sft|dpo)_(entropy|gini)")]
    assert (scored.n == 8).all() and scored.value.between(0, 1).all()
    for _, row in scored.iterrows():
        assert np.load(tmp_path / "run" / row.per_item).mean() == pytest.approx(row.value)
    delta = ok[ok.metric == "dpo_minus_sft_gini"]
    assert ((delta.ci_low <= delta.value) & (delta.value <= delta.ci_high)).all()
    assert set(skipped.metric) == {"sft_inside_mass", "dpo_inside_mass", "dpo_minus_sft_inside_mass"} and len(skipped) == 2 * 2 * 3
    assert skipped.reason.str.contains("has a region").all()
    figures = {row.extra.get("figure") for _, row in ok.iterrows() if row.extra.get("figure")}
    assert figures and all((tmp_path / "run" / figure).read_bytes().startswith(b"\x89PNG") for figure in figures)
    assert set(ok[ok.extra.map(lambda e: bool(e.get("figure")))].metric) == {"sft_entropy", "dpo_entropy"}


def test_grad_with_some_regions_scores_the_inside_mass_on_those_items(tmp_path, mllm_lineage):
    prefs = write_prefs(tmp_path / "mmpr", n=9, regions=True)  # 3 boxes, 3 masks, 3 without a region
    assert _grad_on(tmp_path, mllm_lineage, f"prefs:file={prefs}") == 0
    frame = read_frame(tmp_path / "run")
    assert (frame.status == "ok").all(), frame[["metric", "status", "reason"]]
    inside = frame[frame.metric.isin(["sft_inside_mass", "dpo_inside_mass"])]
    assert (inside.n == 6).all() and inside.value.between(0, 1).all()
    assert all(e["items_without_region"] == 3 and e["items_without_score"] == 3 for e in inside.extra)
    assert (frame[frame.metric.isin(["sft_entropy", "dpo_gini"])].n == 9).all()
    assert (frame[frame.metric == "dpo_minus_sft_inside_mass"].n == 6).all()


@pytest.mark.parametrize("tower, strategy", [("siglip", "full"), ("clip", "full")])
def test_grad_on_a_transformers_llava_directory_equals_grad_on_its_import(tmp_path, tower, strategy):
    """The study's MLLMs as users have them: a LlavaForConditionalGeneration directory read directly, and its
    import-mllm output, give the same grad rows value for value (CLIP's kept CLS is no grid cell)."""
    from train.mllm_import import import_mllm
    from train.tiny_llava import TinyLlavaConfig, build_llava_hf

    prefs = write_prefs(tmp_path / "mmpr", n=6, regions=True)
    llava = build_llava_hf(tmp_path / "llava", TinyLlavaConfig(tower=tower, strategy=strategy, image_size=64, patch_size=16))
    imported = import_mllm(llava, tmp_path / "imported", log=lambda line: None)
    frames = []
    for name, source in (("direct", llava), ("imported", imported)):
        assert run.main(["--encoder", str(source), "--data", f"prefs:file={prefs}", "--out", str(tmp_path / name), "--cache-dir", str(tmp_path / "cache"),
                         "--workers", "0", "--no-report", "--suite", "grad", "--grad-items", "0"]) == 0
        frames.append(read_frame(tmp_path / name))
    direct, copy = frames
    assert (direct.status == "ok").all(), direct[["metric", "status", "reason"]]
    columns = ["task", "metric", "value", "ci_low", "ci_high", "n", "weights_hash"]  # the encoder's name is its folder's
    assert direct[columns].equals(copy[columns])
    assert all(e["grid"] == [4, 4] for e in direct.extra)
