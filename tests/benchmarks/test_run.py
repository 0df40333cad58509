"""``python -m benchmarks.run`` end to end on tiny data: rows, files, skipped suites, failures, reruns."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import run
from benchmarks.results import read_frame
from tests.benchmarks.conftest import write_tiny_checkpoint

DATA = "shapes:n=100:n_val=20:seed=0:size=32"


def _run(tmp_path, *extra):
    return run.main(["--data", DATA, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--linear-epochs", "2", "--no-report", *extra])


def test_run_writes_rows_and_skips_unbuilt_suites(tmp_path):
    original = write_tiny_checkpoint(tmp_path / "orig.safetensors", seed=0)
    candidate = write_tiny_checkpoint(tmp_path / "cand.safetensors", seed=1)
    assert _run(tmp_path, "--encoder", str(original), "--encoder", str(candidate), "--suite", "all", "--layers", "0",
                "--seg-protocols", "patch_probe", "--seg-epochs", "1", "--seg-min-steps", "0", "--seg-seeds", "1") == 0
    out = tmp_path / "run"
    frame = read_frame(out)
    assert (out / "results.csv").exists() and (out / "run.log").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["suites"]["cls"]["data"] == DATA and {e["name"] for e in config["encoders"]} == {"orig", "cand"}
    assert all(len(e["weights_hash"]) == 64 for e in config["encoders"])
    assert config["versions"]["torch"] == torch.__version__ and config["hardware"]["cpu_capability"]
    ok = frame[frame.status == "ok"]
    assert {"cls", "seg", "loc", "align"} <= set(ok.suite)  # align: the lineage CKA rows (no LM given)
    assert set(ok[ok.suite == "seg"].task) == {"patch_probe"}
    ok = ok[ok.suite == "cls"]
    assert {"linear", "knn10", "knn20", "prototype"} <= set(ok.task)
    top1 = ok[ok.metric == "top1"]
    assert top1.value.between(0, 100).all() and (top1.ci_low <= top1.value).all() and (top1.value <= top1.ci_high).all()
    assert (top1.n == 20).all()
    assert {p["pooling"] for p in top1.extra} == {"cls", "mean"} and {0} <= {p.get("layer") for p in top1.extra}
    skipped = frame[frame.status == "skipped"]
    assert {"grad", "vqa"} <= set(skipped.suite) and (skipped.reason != "").all()
    assert set(frame[frame.encoder == "cand"].base) == {"orig"}
    for path in top1.per_item:
        assert (out / path).exists()


def test_rerun_reuses_cache_and_gives_identical_numbers(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "e.safetensors")
    assert _run(tmp_path, "--encoder", str(checkpoint), "--suite", "cls") == 0
    first = read_frame(tmp_path / "run")
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert _run(tmp_path, "--encoder", str(checkpoint), "--suite", "cls") == 0
    second = read_frame(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == entries
    assert first.value.tolist() == second.value.tolist()
    assert list((tmp_path / "run").glob("results.*.previous.jsonl")), "the earlier results file is kept"


def test_bad_checkpoint_fails_the_run_but_keeps_other_results(tmp_path):
    good = write_tiny_checkpoint(tmp_path / "good.safetensors")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert _run(tmp_path, "--encoder", str(good), "--encoder", str(bad), "--suite", "cls") == 1
    frame = read_frame(tmp_path / "run")
    failed = frame[frame.status == "failed"]
    assert list(failed.encoder) == ["bad"] and "bad.pt" in failed.reason.iloc[0]
    assert (frame[frame.encoder == "good"].status == "ok").all()


def test_unknown_suite_and_missing_encoder_are_usage_errors(tmp_path, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "x.safetensors")
    assert _run(tmp_path, "--encoder", str(checkpoint), "--suite", "nope") == 2
    assert "unknown suite(s) nope" in capsys.readouterr().err
    assert _run(tmp_path) == 2
    assert "no encoder" in capsys.readouterr().err


def test_all_suites_on_an_imagenet_folder_give_cls_and_loc_rows_and_skip_the_rest(tmp_path):
    from tests.imagesets.conftest import write_image

    root = tmp_path / "imagenet"
    wnids = ["n01440764", "n01443537"]
    lines = ["ImageId,PredictionString"]
    for c, wnid in enumerate(wnids):
        for k in range(8):
            write_image(root / "train" / wnid / f"{wnid}_{k}.JPEG", size=(40, 32), seed=10 * c + k, fmt="JPEG")
        for k in range(6):
            stem = f"ILSVRC2012_val_{c}{k:07d}"
            write_image(root / "val" / wnid / f"{stem}.JPEG", size=(40, 32), seed=100 + 10 * c + k, fmt="JPEG")
            lines.append(f"{stem},{wnid} 4 4 30 26")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    checkpoint = write_tiny_checkpoint(tmp_path / "enc.safetensors")
    status = run.main(["--encoder", str(checkpoint), "--suite", "all", "--data", f"imagenet:root={root}", "--out", str(tmp_path / "run"),
                       "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-report", "--linear-epochs", "1", "--loc-items", "4"])
    assert status == 0
    frame = read_frame(tmp_path / "run")
    ok = frame[frame.status == "ok"]
    assert set(ok.suite) == {"cls", "loc"} and (ok[ok.suite == "loc"].n == 4).all()
    skipped = frame[frame.status == "skipped"]
    assert set(skipped.suite) == {"cls", "seg", "grad", "align", "vqa"} and (skipped.reason != "").all()
    assert set(skipped[skipped.suite == "cls"].task) == {"knn20"}  # 16 train images: k = 20 cannot run, k = 10 can
    assert "segmentation masks" in skipped[skipped.suite == "seg"].reason.iloc[0]
    assert "Traceback" not in (tmp_path / "run" / "run.log").read_text() and not (frame.status == "failed").any()


def test_loc_gives_the_same_rows_before_and_after_cls(tmp_path):
    from tests.benchmarks.suites.conftest import write_lineage

    manifest = write_lineage(tmp_path / "lineage")
    values = {}
    for order in ("cls,loc", "loc,cls"):
        out = tmp_path / order.replace(",", "-")
        assert run.main(["--encoders", str(manifest), "--suite", order, "--data", DATA, "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                         "--workers", "0", "--no-report", "--linear", "both", "--linear-epochs", "2", "--loc-items", "8"]) == 0
        loc = read_frame(out)
        loc = loc[loc.suite == "loc"]
        values[order] = sorted(zip(loc.encoder, loc.metric, loc.variant, loc.value, [e["head"]["lr"] for e in loc.extra]))
    assert values["cls,loc"] == values["loc,cls"] and len(values["cls,loc"]) == 16


def test_an_encoder_with_constant_features_gives_degenerate_rows_that_the_report_does_not_compare(tmp_path):
    import timm

    from encoders import save_encoder_checkpoint
    from tests.benchmarks.conftest import TINY_ARCH, TINY_OPTIONS

    original = write_tiny_checkpoint(tmp_path / "orig.safetensors", seed=0)
    torch.manual_seed(1)
    state = timm.create_model(TINY_ARCH, pretrained=False, num_classes=0, **TINY_OPTIONS).state_dict()
    state["norm.weight"].zero_()  # every token becomes the norm's bias: the features carry nothing
    blind = save_encoder_checkpoint(state, {"family": "timm", "arch": TINY_ARCH, "options": TINY_OPTIONS}, tmp_path / "blind.safetensors")
    assert _run(tmp_path, "--encoder", str(original), "--encoder", str(blind), "--suite", "cls,seg", "--seg-protocols", "patch_probe",
                "--seg-epochs", "1", "--seg-min-steps", "0", "--seg-seeds", "1", "--linear", "sgd") == 0
    frame = read_frame(tmp_path / "run")
    ok = frame[(frame.status == "ok") & (frame.task != "data")]
    assert all("trivial_baseline" in e for e in ok.extra)
    flagged = ok[[bool(e.get("degenerate")) for e in ok.extra]]
    assert set(flagged[flagged.encoder == "blind"].task) >= {"linear_sgd", "knn10", "prototype", "patch_probe"}
    assert any("constant" in e["degenerate"] for e in flagged.extra)
    from reports.build import build_report

    html = build_report([tmp_path / "run"], tmp_path / "report.html").read_text()
    assert "degenerate" in html and "not compared" in html
