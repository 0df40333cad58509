"""Generated run directories in the on-disk layout benchmarks.run writes (results.jsonl, config.json,
per_item/*.npy, figures/*.png), built with benchmarks.results.append_rows."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.results import ResultRow, append_rows, write_csv
from evidence.stats import bootstrap_ci

LINEAGE = [("vit-orig", "original", ""), ("vit-sft", "sft", "vit-orig"), ("vit-pivot", "pivot", "vit-orig")]
N_ITEMS = 400
EVIL = "<script>alert(1)</script>"


def _identity(name: str, role: str, base: str) -> dict:
    return {"encoder": name, "role": role, "base": base, "weights_hash": f"sha256-{name}",
            "checkpoint": f"/ckpt/{name}.safetensors"}


def _accuracy_row(run_dir: Path, name: str, role: str, base: str, scores: np.ndarray, **key) -> ResultRow:
    relative = f"per_item/{name}_{key['task']}.npy"
    (run_dir / "per_item").mkdir(parents=True, exist_ok=True)
    np.save(run_dir / relative, scores)
    low, high = bootstrap_ci(scores, scale=100.0, n_boot=300)
    return ResultRow(**_identity(name, role, base), **key, value=float(scores.mean() * 100), n=scores.size,
                     ci_low=low, ci_high=high, per_item=relative)


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((24, 32, 3), dtype=np.uint8)
    pixels[..., :] = colour
    pixels[6:18, 8:24] = (255, 255, 0)
    Image.fromarray(pixels).save(path)


def make_lineage_run(run_dir: Path) -> Path:
    """A lineage run: original / sft / pivot on cls (per-item), seg (CIs only), align (per layer),
    vqa (categories), loc (with Grad-CAM figures), and one skipped row."""
    rng = np.random.default_rng(0)
    original = (rng.random(N_ITEMS) < 0.5).astype(np.float32)
    pivot = original.copy()
    flip = np.flatnonzero(original == 0)[: N_ITEMS // 5]  # +20 points on the same items
    pivot[flip] = 1.0
    per_encoder = {"vit-orig": original, "vit-sft": original.copy(), "vit-pivot": pivot}
    rows = []
    colours = {"vit-orig": (90, 90, 90), "vit-sft": (30, 120, 200), "vit-pivot": (200, 40, 40)}
    for index, (name, role, base) in enumerate(LINEAGE):
        ident = _identity(name, role, base)
        rows.append(_accuracy_row(run_dir, name, role, base, per_encoder[name],
                                  suite="cls", task="linear", dataset="imagenet-tiny", metric="top1",
                                  extra={"pooling": "mean", "timings": {"features_s": 1.5 + index}}))
        rows.append(ResultRow(**ident, suite="seg", task="patch_probe", dataset="ade20k-tiny", metric="recall",
                              value=30.0 + index, ci_low=29.0 + index, ci_high=31.0 + index, n=50))
        rows.append(ResultRow(**ident, suite="seg", task="linear_head", dataset="ade20k-tiny", metric="loss",
                              value=1.0 - 0.1 * index, higher_is_better=False))
        for layer in range(4):
            if name != "vit-orig":
                rows.append(ResultRow(**ident, suite="align", task="cka_vs_original", dataset="imagenet-tiny",
                                      metric="linear_cka", value=1.0 - 0.05 * layer * index, extra={"layer": layer}))
        for category, value in (("general", 50.0), ("knowledge", 40.0), ("ocr_chart", 30.0), ("vision_centric", 45.0)):
            rows.append(ResultRow(**ident, suite="vqa", task=category, dataset="lmms-eval", metric="accuracy",
                                  value=value + index, extra={"category": category}))
        figure = f"figures/gradcam_{name}.png"
        _png(run_dir / figure, colours[name])
        rows.append(ResultRow(**ident, suite="loc", task="gradcam", dataset="boxes-tiny", metric="pointing_game",
                              value=60.0 + index, extra={"figure": figure}))
    rows.append(ResultRow(**_identity("vit-pivot", "pivot", "vit-orig"), suite="vqa", task="docvqa",
                          dataset="lmms-eval", metric="anls", value=None, status="skipped",
                          reason="lmms-eval results file not found under vqa_results/"))
    append_rows(run_dir, rows)
    write_csv(run_dir)
    config = {
        "note": "Demo size: 400 items per dataset, numbers are not comparable to the paper.",
        "timings": {"total_s": 12.5, "suites": {"cls": 4.0, "seg": 3.0}},
        "encoders": [{"name": name, "role": role, "base": base, "family": "timm", "arch": "vit_tiny_patch16_224",
                      "checkpoint": f"/ckpt/{name}.safetensors", "weights_hash": f"sha256-{name}",
                      "remap": {"stripped_prefix": "module."} if name == "vit-sft" else {}}
                     for name, role, base in LINEAGE],
        "versions": {"torch": "2.14.1", "timm": "1.0.31"},
        "seed": 0,
    }
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    return run_dir


def make_single_run(run_dir: Path, name: str = EVIL) -> Path:
    """A second run with one lone encoder (by default named like an XSS payload) and a failed row."""
    ident = {"encoder": name, "role": "", "base": "", "weights_hash": "sha256-lone", "checkpoint": f"/ckpt/{name}.pt"}
    append_rows(run_dir, [
        ResultRow(**ident, suite="cls", task="knn", dataset="imagenet-tiny", metric="top1", value=42.0,
                  ci_low=40.0, ci_high=44.0, n=N_ITEMS),
        ResultRow(**ident, suite="seg", task="linear_head", dataset="ade20k-tiny", metric="miou", value=None,
                  status="failed", reason="CUDA out of memory & <b>bold</b>"),
    ])
    (run_dir / "config.json").write_text(json.dumps({"encoders": [{"name": name, "family": "<img src=x>"}]}))
    return run_dir


@pytest.fixture
def lineage_run(tmp_path: Path) -> Path:
    return make_lineage_run(tmp_path / "run_lineage")


@pytest.fixture
def single_run(tmp_path: Path) -> Path:
    return make_single_run(tmp_path / "run_single")


@pytest.fixture(scope="session")
def built_report(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(report.html, lineage run dir, single run dir), built once for all report tests."""
    from reports.build import build_report

    root = tmp_path_factory.mktemp("report")
    lineage = make_lineage_run(root / "run_lineage")
    single = make_single_run(root / "run_single")
    return build_report([lineage, single], root / "out" / "report.html", title="Test report"), lineage, single
