"""The shipped study plan (plans/pivot-study.toml): all six suites on real-data layouts (ImageNet, ADE20K,
COCO, parquet caption pairs, MMPR-style preference JSONL) in one command, and the variables it needs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.results import read_frame
from tests.imagesets.conftest import write_image
from tests.imagesets.real_layouts import write_coco, write_pairs_parquet, write_prefs

REPO = Path(__file__).resolve().parents[3]
PLAN = REPO / "plans" / "pivot-study.toml"


def _imagenet(root: Path) -> Path:
    for c, wnid in enumerate(["n01440764", "n01443537"]):
        for k in range(8):
            write_image(root / "train" / wnid / f"{wnid}_{k}.JPEG", size=(40, 32), seed=10 * c + k, fmt="JPEG")
        for k in range(6):
            write_image(root / "val" / wnid / f"ILSVRC2012_val_{c}{k:07d}.JPEG", size=(40, 32), seed=100 + 10 * c + k, fmt="JPEG")
    return root


def test_the_study_plan_runs_all_six_suites_on_real_layouts_in_one_command(tmp_path, mllm_lineage, ade_root, monkeypatch):
    pytest.importorskip("lmms_eval")
    imagenet = _imagenet(tmp_path / "imagenet")
    coco = write_coco(tmp_path / "coco")
    pairs = write_pairs_parquet(tmp_path / "prh" / "wit.parquet", n=16)
    prefs = write_prefs(tmp_path / "mmpr", n=9, regions=True)
    monkeypatch.chdir(REPO)  # the plan is read as the README says: from the repository root
    monkeypatch.setenv("PREFS_FILE", str(prefs))  # a variable from the environment, the others from --set
    status = run.main([
        "--encoders", str(mllm_lineage), "--plan", "plans/pivot-study.toml",
        "--set", f"imagenet_root={imagenet}", "--set", f"ade20k_root={ade_root}", "--set", f"pairs_file={pairs}",
        "--data", f"loc=coco:root={coco}", "--vqa-tasks", "shapes_vqa", "--vqa-items", "8",
        "--seg-protocols", "patch_probe", "--seg-epochs", "1", "--seg-seeds", "1", "--linear-epochs", "1", "--loc-items", "6",
        "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-report",
    ])
    frame = read_frame(tmp_path / "run")
    assert status == 0, frame[frame.status != "ok"][["suite", "metric", "status", "reason"]]
    assert not (frame.status == "failed").any()
    ok = frame[frame.status == "ok"]
    assert set(ok.suite) == {"cls", "seg", "loc", "align", "grad", "vqa"}
    for suite in ("cls", "seg", "loc", "align", "grad", "vqa"):
        assert set(ok[ok.suite == suite].encoder) == {"orig", "tuned"}, suite
    data = {suite: set(frame[frame.suite == suite].dataset) for suite in ("cls", "seg", "loc", "align", "grad")}
    assert data["cls"] == {f"imagenet:root={imagenet}"} and data["seg"] == {f"ade20k:root={ade_root}"}
    assert data["loc"] == {f"coco:root={coco}"} and data["align"] == {f"pairs:file={pairs}"} and data["grad"] == {f"prefs:file={prefs}"}
    assert set(ok[ok.suite == "align"].task) == {"vision_language", "lineage"} and (ok[ok.metric == "mutual_knn_k10"].n == 16).all()
    assert (ok[(ok.suite == "loc") & (ok.metric == "pointing_game")].n == 6).all()
    assert set(ok[ok.suite == "vqa"].task) >= {"shapes_vqa"}
    plan = json.loads((tmp_path / "run" / "config.json").read_text())["plan"]
    assert plan["grad"]["data"] == f"prefs:file={prefs}" and plan["align"]["items"] == 1024 and plan["vqa"]["tasks"] == ["shapes_vqa"]


def test_the_study_plan_names_the_datasets_and_variables_it_needs(tmp_path, capsys, monkeypatch):
    from benchmarks.plan import resolve

    monkeypatch.chdir(REPO)
    for name in ("imagenet_root", "ade20k_root", "pairs_file", "prefs_file"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    args = ["--plan", "plans/pivot-study.toml", "--set", "imagenet_root=/in", "--set", "ade20k_root=/ade", "--set", "pairs_file=/p.parquet", "--set", "prefs_file=/m.jsonl"]
    _, plan, _ = resolve(run.parse_args(args))
    assert {item.name: item.data for item in plan.suites} == {
        "cls": "imagenet:root=/in", "seg": "ade20k:root=/ade", "loc": "imagenet:root=/in", "align": "pairs:file=/p.parquet",
        "grad": "prefs:file=/m.jsonl", "vqa": plan.suite("vqa").data}
    assert len(plan.options_of("vqa").tasks) == 16 and plan.options_of("seg").iters == 40000
    assert run.main(["--encoder", "x.safetensors", "--plan", "plans/pivot-study.toml", "--set", "imagenet_root=/in"]) == 2
    assert "uses ${ade20k_root}, which is not set; pass --set ade20k_root=VALUE" in capsys.readouterr().err
    assert PLAN.is_file()  # shipped in the repository
