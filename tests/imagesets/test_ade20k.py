from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import DataError
from imagesets import BadImageError, open_split
from imagesets.ade20k import ADE20K_CLASSES


def test_reads_layout_and_reduces_zero_label(ade_root: Path):
    train = open_split(f"ade20k:root={ade_root}", "train")
    assert len(train) == 2 and len(open_split(f"ade20k:root={ade_root}", "val")) == 1
    assert train.seg_classes == list(ADE20K_CLASSES) and len(train.seg_classes) == 150
    assert train.seg_classes[0] == "wall" and train.seg_classes[149] == "flag"
    assert train.classes == [] and train.labels.tolist() == [-1, -1]
    assert train.item_id(1) == "images/training/ADE_train_00000002.jpg"
    img, mask = train.load_image(0), train.seg_mask(0)
    assert img.mode == "RGB" and img.size == (16, 12)
    assert mask.shape == (12, 16) and mask.dtype == np.uint8
    assert (mask[2:5, 3:9] == 0).all() and (mask[6:10, 10:15] == 149).all()  # wall 1 -> 0, flag 150 -> 149
    assert mask[0, 0] == 12 and mask[11, 0] == 255  # person 13 -> 12; "other" 0 -> ignore
    assert sorted(np.unique(mask).tolist()) == [0, 12, 149, 255]


def test_one_box_per_class(ade_root: Path):
    boxes = open_split(f"ade20k:root={ade_root}", "train").boxes(1)
    assert [(b.label, b.x0, b.y0, b.x1, b.y1) for b in boxes] == [(0, 3, 2, 9, 5), (13, 0, 0, 1, 1), (149, 10, 6, 15, 10)]


def test_fingerprint_and_pickling(ade_root: Path):
    spec = f"ade20k:root={ade_root}"
    split = open_split(spec, "train")
    clone = pickle.loads(pickle.dumps(split))
    assert np.array_equal(clone.seg_mask(1), split.seg_mask(1)) and clone.fingerprint == split.fingerprint
    Image.fromarray(np.ones((12, 16), np.uint8), "L").save(ade_root / "annotations" / "training" / "ADE_train_00000002.png")
    assert open_split(spec, "train").fingerprint != split.fingerprint  # annotations are content too


def test_missing_annotation_names_the_image(ade_root: Path):
    (ade_root / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    with pytest.raises(DataError, match="ADE_train_00000002.jpg"):
        open_split(f"ade20k:root={ade_root}", "train")


def test_missing_root_and_empty_split(tmp_path: Path, ade_root: Path):
    with pytest.raises(DataError, match="(?s)ADE20K root .* does not exist.*fix: expected layout: .*images/training"):
        open_split(f"ade20k:root={tmp_path / 'ADE'}", "train")
    for f in (ade_root / "images" / "validation").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="no images .* in .*validation"):
        open_split(f"ade20k:root={ade_root}", "val")


def test_bad_annotations_are_reported(ade_root: Path):
    split = open_split(f"ade20k:root={ade_root}", "train")
    ann = ade_root / "annotations" / "training" / "ADE_train_00000001.png"
    Image.new("RGB", (16, 12)).save(ann)
    with pytest.raises(BadImageError, match="mode RGB"):
        split.seg_mask(0)
    Image.fromarray(np.full((12, 16), 151, np.uint8), "L").save(ann)
    with pytest.raises(BadImageError, match="value 151"):
        split.seg_mask(0)
    Image.fromarray(np.zeros((6, 8), np.uint8), "L").save(ann)
    with pytest.raises(BadImageError, match="8x6 but its image"):
        split.seg_mask(0)
    ann.write_bytes(b"broken")
    with pytest.raises(BadImageError) as info:
        split.seg_mask(0)
    assert info.value.path == str(ann)
