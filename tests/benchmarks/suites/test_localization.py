"""The loc suite end to end on a tiny lineage: rows per block, per-item scores, the gallery figure,
the head's provenance, and the bad inputs (no boxes or masks, a block that does not exist); COCO's
regions scored as hand-computed ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import run
from benchmarks.results import read_frame
from encoders import PreprocessConfig
from imagesets import open_split
from probes.gradcam import localization_scores
from tests.imagesets.real_layouts import rect_mask, write_coco

from .conftest import DATA


def _run(tmp_path, manifest, *extra, data=DATA):
    return run.main(["--encoders", str(manifest), "--data", data, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                     "--workers", "0", "--no-report", "--linear-epochs", "2", *extra])


def test_loc_rows_per_block_with_cis_per_item_scores_and_figures(tmp_path, plain_lineage):
    manifest = plain_lineage
    assert _run(tmp_path, manifest, "--suite", "cls,loc", "--linear", "both") == 0  # loc reuses the SGD grid's lr / weight decay
    frame = read_frame(tmp_path / "run")
    loc = frame[frame.suite == "loc"]
    assert (loc.status == "ok").all() and set(loc.encoder) == {"orig", "tuned"}
    assert set(loc.metric) == {"pointing_game", "energy_pointing_game", "iou_top15", "zero_maps"}
    scored = loc[loc.metric != "zero_maps"]
    assert (scored.n == 24).all() and scored.value.between(0, 100).all()
    assert ((scored.ci_low <= scored.value + 1e-9) & (scored.value <= scored.ci_high + 1e-9)).all()
    # the tiny ViT has 2 blocks: the last block's rows carry no layer (as in cls), the penultimate's layer 0
    assert sorted({e["block"] for e in scored.extra}) == [0, 1]
    assert {e.get("layer") for e in scored.extra} == {None, 0}
    assert {e["head"]["source"] for e in scored.extra} == {"the SGD grid's selection on train's held-out part (cls task linear_sgd)"}
    for _, row in scored.iterrows():
        assert np.load(tmp_path / "run" / row.per_item).mean() * 100 == pytest.approx(row.value)
        assert (tmp_path / "run" / row.extra["figure"]).read_bytes().startswith(b"\x89PNG")


def test_loc_without_cls_selects_its_own_head_the_same_way(tmp_path, plain_lineage):
    manifest = plain_lineage
    assert _run(tmp_path, manifest, "--suite", "loc", "--loc-layers", "-1", "--loc-items", "10") == 0
    loc = read_frame(tmp_path / "run")
    assert (loc.status == "ok").all() and (loc[loc.metric == "pointing_game"].n == 10).all()
    assert all(e["head"]["source"].startswith("the SGD grid's selection") and e["head"]["lr"] > 0 for e in loc.extra)


def test_loc_on_a_dataset_without_boxes_or_masks_is_refused_when_named_and_skipped_under_all(tmp_path, plain_lineage, capsys):
    assert _run(tmp_path, plain_lineage, "--suite", "loc", data="digits") == 2
    assert "object boxes or segmentation masks" in capsys.readouterr().err
    assert _run(tmp_path, plain_lineage, "--suite", "cls,loc", "--data", "loc=digits", "--data", f"cls={DATA}", data="digits") == 2
    assert _run(tmp_path, plain_lineage, "--suite", "all", "--suite", "cls", data="digits") == 0
    frame = read_frame(tmp_path / "run")
    loc = frame[frame.suite == "loc"]
    assert (loc.status == "skipped").all() and loc.reason.str.contains("object boxes or segmentation masks").all()
    assert (frame[frame.suite == "cls"].status == "ok").all()


def test_loc_with_a_block_that_does_not_exist_is_a_usage_error_naming_the_valid_range(tmp_path, plain_lineage, capsys):
    assert _run(tmp_path, plain_lineage, "--suite", "loc", "--loc-layers", "5") == 2
    assert "--loc-layers" in capsys.readouterr().err
    assert _run(tmp_path, plain_lineage, "--suite", "loc", "--loc-layers", "-3,-1") == 2
    err = capsys.readouterr().err
    assert "--loc-layers" in err and "-2..1" in err
    assert _run(tmp_path, plain_lineage, "--suite", "loc", "--loc-layers", "a,b") == 2
    assert "--loc-layers 'a,b': expected an integer" in capsys.readouterr().err


def test_projector_features_skip_loc_and_keep_grad_and_align(tmp_path, mllm_lineage):
    assert _run(tmp_path, mllm_lineage, "--suite", "loc,grad,align", "--features", "projector", "--grad-items", "4") == 0
    frame = read_frame(tmp_path / "run")
    loc = frame[frame.suite == "loc"]
    assert (loc.status == "skipped").all() and loc.reason.str.contains("no transformer blocks").all()
    assert (frame[frame.suite != "loc"].status == "ok").all()


def test_loc_regions_from_coco_score_as_the_hand_computed_boxes_and_masks(tmp_path):
    from benchmarks.suites.localization import _items

    split = open_split(f"coco:root={write_coco(tmp_path / 'coco')}", "val")
    preprocess = PreprocessConfig(resolution=32, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)  # the encoder frame is the image
    indices, _, boxes, masks = _items(split, 0, preprocess)
    assert indices == list(range(len(split)))
    # Val image 0: its largest object is the dog polygon at x 4..20, y 4..16 (a car RLE and a crowd person region beside it).
    assert split.classes[int(split.labels[0])] == "dog"
    box = torch.from_numpy(rect_mask(4, 4, 20, 16))
    assert torch.equal(boxes[0], box) and torch.equal(masks[0], box)
    # A map that is 1 on x 12..28, y 8..12 (64 pixels, 32 of them on the dog) and peaks at (x 14, y 9), on the dog.
    heat = torch.zeros(1, 32, 32)
    heat[0, 8:12, 12:28] = 1.0
    heat[0, 9, 14] = 2.0
    from_coco = localization_scores(heat, boxes[:1], masks[:1], topk=0.0625)
    by_hand = localization_scores(heat, box[None], box[None], topk=0.0625)
    total = 64 + 1
    assert from_coco.pointing[0] == by_hand.pointing[0] == 1.0
    assert from_coco.energy[0] == pytest.approx(by_hand.energy[0]) and from_coco.energy[0] == pytest.approx((32 + 1) / total)
    # top 6.25% = 64 pixels = the map's support: 32 on the dog; the dog has 192 pixels, so IoU = 32 / (64 + 192 - 32)
    assert from_coco.iou[0] == pytest.approx(by_hand.iou[0]) and from_coco.iou[0] == pytest.approx(32 / 224)
