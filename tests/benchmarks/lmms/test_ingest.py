"""``--suite vqa`` ingesting lmms-eval result files (no lmms-eval run): the Cambrian table, missing
tasks, partial runs, the older layout, files that are not lmms-eval's, per-item scores."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import run
from benchmarks.lmms.results import LmmsResultsError, collect_results, read_results_file
from benchmarks.results import read_rows

from .conftest import CAMBRIAN_VALUES, CATEGORY_MEANS, write_lmms_results

REAL = Path(__file__).parent / "data" / "lmms-eval-0.7.3"


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    import timm

    from encoders import save_encoder_checkpoint

    options = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    state = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **options).state_dict()
    return save_encoder_checkpoint(state, {"family": "timm", "arch": "vit_small_patch16_224", "options": options}, tmp_path_factory.mktemp("enc") / "enc.safetensors")


def _ingest(tmp_path: Path, encoder: Path, results: Path, *extra: str) -> tuple[int, dict]:
    status = run.main(["--encoder", str(encoder), "--suite", "vqa", "--vqa-results", str(results), "--out", str(tmp_path / "run"),
                       "--cache-dir", str(tmp_path / "cache"), "--no-report", *extra])
    rows = read_rows(tmp_path / "run")
    return status, {(row.task, row.metric): row for row in rows}


def test_cambrian_table_matches_hand_computed_means(tmp_path, encoder):
    tasks = {**CAMBRIAN_VALUES, "shapes_vqa": {"exact_match": (0.25, 0.05)}, "my_task": {"foo_score": (0.3, None)}}
    write_lmms_results(tmp_path / "lmms" / "llava", tasks)
    status, rows = _ingest(tmp_path, encoder, tmp_path / "lmms")
    assert status == 0
    for category, expected in CATEGORY_MEANS.items():
        row = rows[(category, "score")]
        assert row.status == "ok" and row.value == pytest.approx(expected), category
        assert row.dataset == "cambrian16" and row.extra["level"] == ("overall" if category == "overall" else "category")
    ocr = rows[("OCR & Chart", "score")]  # four stderrs of 1 point: sqrt(4) / 4 = 0.5
    assert ocr.ci_low == pytest.approx(35.0 - 1.959964 * 0.5) and ocr.ci_high == pytest.approx(35.0 + 1.959964 * 0.5)
    assert ocr.n == 400 and rows[("overall", "score")].n == 1600
    assert rows[("General", "score")].ci_low is None  # MME has no stderr: none is invented
    mme = rows[("mme", "score")]
    assert mme.value == pytest.approx(75.0) and mme.extra["lmms_value"] == 1500.0 and mme.extra["category"] == "General"
    assert mme.extra["lmms_metric"] == "mme_perception_score,none" and mme.extra["benchmark"] == "MME"
    assert ("mme", "mme_cognition_score") not in rows  # not a Cambrian number
    gqa = rows[("gqa", "score")]
    assert gqa.value == pytest.approx(50.0) and gqa.ci_high == pytest.approx(50.0 + 1.959964 * 0.5) and gqa.n == 100
    assert rows[("shapes_vqa", "exact_match")].value == pytest.approx(25.0)  # a known fraction, outside the map
    other = rows[("my_task", "foo_score")]
    assert other.value == pytest.approx(0.3) and other.extra["category"] == "uncategorised" and other.extra["scale"] == 1.0
    assert other.extra["lmms"]["model_args"] == "pretrained=lmms-lab/llava-onevision-qwen2-0.5b-ov"  # which weights produced it
    assert other.extra["lmms"]["lmms_eval_version"] == "0.7.3"


def test_missing_benchmark_leaves_category_and_overall_unreported(tmp_path, encoder):
    tasks = {task: metrics for task, metrics in CAMBRIAN_VALUES.items() if task != "mmvp"}
    write_lmms_results(tmp_path / "lmms", tasks)
    status, rows = _ingest(tmp_path, encoder, tmp_path / "lmms")
    vision = rows[("Vision-centric", "score")]
    assert vision.status == "skipped" and "MMVP (mmvp)" in vision.reason and "a mean over fewer is a different number" in vision.reason
    assert rows[("overall", "score")].status == "skipped" and "Vision-centric" in rows[("overall", "score")].reason
    assert rows[("General", "score")].value == pytest.approx(60.0)
    assert status == 0  # missing benchmarks are skipped, not failures


def test_partial_run_is_kept_apart_from_full_numbers(tmp_path, encoder):
    n = {task: (50, 1000) for task in CAMBRIAN_VALUES}
    write_lmms_results(tmp_path / "lmms", CAMBRIAN_VALUES, n=n, limit=50)
    _, rows = _ingest(tmp_path, encoder, tmp_path / "lmms")
    gqa = rows[("gqa", "score")]
    assert gqa.dataset == "lmms-eval:limit=50/1000" and gqa.n == 50
    assert any("partial run: 50 of 1000 documents" in note and "--limit 50" in note for note in gqa.extra["notes"])
    assert rows[("overall", "score")].dataset == "cambrian16:partial"


def test_older_layout_is_read_with_a_note(tmp_path, encoder):
    folder = tmp_path / "old" / "2024-05-01"
    folder.mkdir(parents=True)
    # lmms-eval 0.1/0.2 style: results.json, metric keys without ",none", no n-samples, MME's old spelling.
    data = {"results": {"mme": {"alias": "mme", "mme_percetion_score": 1400.0, "mme_cognition_score": 280.0},
                        "gqa": {"alias": "gqa", "exact_match": 0.6, "exact_match_stderr": 0.01}},
            "configs": {}, "versions": {"mme": "Yaml", "gqa": "Yaml"}, "config": {"model": "llava", "model_args": "pretrained=liuhaotian/llava-v1.5-7b"}}
    (folder / "results.json").write_text(json.dumps(data))
    (folder / "gqa.json").write_text(json.dumps({"args": {}, "logs": [{"doc_id": i, "target": "a", "exact_match": float(i % 5 != 0)} for i in range(10)]}))
    parsed = read_results_file(folder / "results.json")
    assert parsed.layout.startswith("older lmms-eval") and "no n-samples" in parsed.layout and "without ',<filter>'" in parsed.layout
    _, rows = _ingest(tmp_path, encoder, tmp_path / "old")
    assert rows[("mme", "score")].value == pytest.approx(70.0)
    gqa = rows[("gqa", "score")]
    assert gqa.value == pytest.approx(60.0) and gqa.n == 10  # n counted from the samples file
    assert any("older lmms-eval" in note for note in gqa.extra["file_notes"])
    assert gqa.per_item and np.load(tmp_path / "run" / gqa.per_item).tolist() == [float(i % 5 != 0) for i in range(10)]


def test_file_that_is_not_lmms_evals(tmp_path, encoder):
    bad = tmp_path / "bad" / "20250101_000000_results.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"accuracy": 0.5, "model": "x"}))
    with pytest.raises(LmmsResultsError, match=r"not an lmms-eval results file .*no 'results' map.*Expected the <date>_results.json"):
        collect_results(bad)
    status, rows = _ingest(tmp_path, encoder, bad)
    assert status == 1 and rows[("-", "-")].status == "failed" and "not an lmms-eval results file" in rows[("-", "-")].reason
    # Beside a good file, the bad one is a failed row and the good one is still read.
    write_lmms_results(bad.parent, {"gqa": {"exact_match": (0.5, None)}}, date="20250102_000000")
    (bad.parent / "20250103_000000_results.json").write_bytes(b"\x89PNG\r\n")
    _, rows = _ingest(tmp_path / "second", encoder, bad.parent)
    assert rows[("gqa", "score")].value == pytest.approx(50.0)
    failed = [row for key, row in rows.items() if row.status == "failed"]
    assert failed and all("not an lmms-eval results file" in row.reason for row in failed)


def test_no_results_file_in_folder(tmp_path, encoder):
    (tmp_path / "empty").mkdir()
    status, rows = _ingest(tmp_path, encoder, tmp_path / "empty")
    assert status == 1 and "no lmms-eval results file (*_results.json)" in rows[("-", "-")].reason


def test_per_item_scores_from_samples_feed_the_paired_bootstrap(tmp_path, encoder):
    rng = np.random.default_rng(0)
    base = (rng.random(200) < 0.5).astype(float)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:40]] = 1.0
    for name, scores in (("orig", base), ("pivot", better)):
        write_lmms_results(tmp_path / "lmms" / name, {"gqa": {"exact_match": (scores.mean(), 0.035)}, "mme": {"mme_perception_score": (1400.0, None)}},
                           n={"gqa": (200, 200)}, samples={"gqa": {"exact_match": scores.tolist()}, "mme": {"mme_perception_score": [{"question_id": "q", "score": 1}] * 200}})
    manifest = tmp_path / "lineage.toml"
    manifest.write_text(f'[[encoder]]\nname = "orig"\ncheckpoint = "{encoder}"\nrole = "original"\n\n'
                        f'[[encoder]]\nname = "pivot"\ncheckpoint = "{encoder}"\nrole = "pivot"\nbase = "orig"\n')
    status = run.main(["--encoders", str(manifest), "--suite", "vqa", "--vqa-results", str(tmp_path / "lmms"), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    rows = {(row.encoder, row.task, row.metric): row for row in read_rows(tmp_path / "run")}
    pivot = rows[("pivot", "gqa", "score")]
    assert np.array_equal(np.load(tmp_path / "run" / pivot.per_item), better)
    assert pivot.dataset_fingerprint == rows[("orig", "gqa", "score")].dataset_fingerprint
    assert "not a number" in rows[("pivot", "mme", "score")].extra["per_item_missing"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "paired bootstrap over 200 items" in html and "<strong>VQA.</strong>" in html
    assert status == 0


def test_several_encoders_need_one_folder_each(tmp_path, encoder):
    write_lmms_results(tmp_path / "lmms", {"gqa": {"exact_match": (0.5, None)}})
    manifest = tmp_path / "lineage.toml"
    manifest.write_text(f'[[encoder]]\nname = "a"\ncheckpoint = "{encoder}"\n\n[[encoder]]\nname = "b"\ncheckpoint = "{encoder}"\nbase = "a"\n')
    status = run.main(["--encoders", str(manifest), "--suite", "vqa", "--vqa-results", str(tmp_path / "lmms"), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--no-report"])
    reasons = [row.reason for row in read_rows(tmp_path / "run")]
    assert status == 1 and any("DIR/<encoder name>/" in reason for reason in reasons)


def test_real_lmms_eval_0_7_3_file(tmp_path):
    collected = collect_results(REAL)
    assert set(collected.tasks) == {"shapes_vqa", "shapes_vqa_mc"} and not collected.errors
    mc = collected.tasks["shapes_vqa_mc"]
    assert mc.n == mc.n_original == 24 and mc.metrics["acc"].stderr is not None and mc.samples is not None
    assert collected.files[0].layout == "lmms-eval 0.4+" and collected.files[0].model == "vee_mllm"
    shutil.copytree(REAL, tmp_path / "copy")
    assert collect_results(tmp_path / "copy").tasks["shapes_vqa"].samples is None  # its samples file was not kept


def test_requested_task_without_result_is_a_failed_row_with_lmms_evals_message(tmp_path, encoder):
    from benchmarks.features import ExtractionConfig
    from benchmarks.suites.base import LoadedEncoder, RunContext
    from benchmarks.suites.vqa import _Rows
    from encoders import EncoderSpec, load_encoder

    spec = EncoderSpec(checkpoint=str(encoder), name="e")
    context = RunContext(data="shapes", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", extraction=ExtractionConfig(), seed=0, config_hash="h")
    builder = _Rows(context, LoadedEncoder(spec, load_encoder(spec)), "lmms-eval run", {"mllm": "m"})
    write_lmms_results(tmp_path / "out", {"gqa": {"exact_match": (0.5, None)}})
    rows = {row.task: row for row in builder.ingest(tmp_path / "out", expected=["gqa", "mme"], run_error="KeyError: 'image' in mme's process_results")}
    assert rows["gqa"].status == "ok"
    assert rows["mme"].status == "failed" and rows["mme"].reason == "lmms-eval produced no result for mme: KeyError: 'image' in mme's process_results"
    assert rows["General"].status == "skipped" and "MME (mme)" in rows["General"].reason
    # Nothing written at all (lmms-eval stopped before saving): every requested task fails with the message.
    (tmp_path / "empty").mkdir()
    rows = builder.ingest(tmp_path / "empty", expected=["gqa"], run_error="MLLMError: no mllm.json")
    assert [(row.task, row.status, row.reason) for row in rows] == [("gqa", "failed", "lmms-eval produced no result for gqa: MLLMError: no mllm.json")]
