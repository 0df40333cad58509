"""coco:root=DIR in COCO's own layout: labels, masks (polygons, RLE, crowd), boxes, captions, bad input."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import DataError
from imagesets import BadImageError, available_splits, dataset_capabilities, open_split
from imagesets.records import DataWarning

from .real_layouts import compressed_rle, rect_mask, rect_polygon, write_coco

pytestmark = pytest.mark.filterwarnings("ignore::imagesets.records.DataWarning")


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return write_coco(tmp_path / "coco")


def _instances(root: Path, split: str = "val") -> tuple[Path, dict]:
    path = root / "annotations" / f"instances_{split}2017.json"
    return path, json.loads(path.read_text())


def test_reads_the_layout_with_labels_masks_boxes_and_captions(coco_root: Path):
    spec = f"coco:root={coco_root}"
    assert available_splits(spec) == ["train", "val"]
    assert dataset_capabilities(spec) == {"labels", "masks", "boxes", "captions", "image_files"}
    val = open_split(spec, "val")
    assert len(val) == 12 and val.classes == ["person", "car", "dog"]  # category-id order (1, 3, 18)
    assert val.seg_classes == ["background", "person", "car", "dog"]
    assert val.item_id(0) == "val2017/000000001003.jpg" and val.path(0) == coco_root / "val2017" / "000000001003.jpg"
    assert val.load_image(0).size == (32, 32) and val.labels.dtype == np.int64
    # image 0: dog polygon (x 4..20, y 4..16) = the largest object, car compressed RLE (x 22..30, y 20..28), crowd person RLE (x 24..32, y 0..4)
    assert val.classes[val.labels[0]] == "dog"
    mask = val.seg_mask(0)
    assert mask.shape == (32, 32) and mask.dtype == np.uint8
    expected = np.zeros((32, 32), np.uint8)
    expected[rect_mask(24, 0, 32, 4)] = 255
    expected[rect_mask(4, 4, 20, 16)] = 3
    expected[rect_mask(22, 20, 30, 28)] = 2
    assert np.array_equal(mask, expected)
    assert [(b.x0, b.y0, b.x1, b.y1, b.label) for b in val.boxes(0)] == [(4, 4, 20, 16, 3), (22, 20, 30, 28, 2)]  # no box for the crowd
    # image 1: a non-crowd object stored as uncompressed RLE (person, x 0..6, y 24..30)
    assert (val.seg_mask(1)[24:30, 0:6] == 1).all() and any(b.label == 1 for b in val.boxes(1))
    assert val.labels.tolist() == [2, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]


def test_captions_first_or_seeded_and_empty_ones_skipped(coco_root: Path):
    first = open_split(f"coco:root={coco_root}", "val")
    with pytest.warns(DataWarning, match="1 empty caption"):  # the captions file is read at the first caption
        assert first.caption(0) == "a red circle number 0"
        assert first.caption(2) == "a yellow triangle number 2"  # its first caption is blank: the next one
    drawn = [open_split(f"coco:root={coco_root}:caption=random:seed={seed}", "val").caption(0) for seed in range(8)]
    assert set(drawn) == {"a red circle number 0", "a green circle number 0"}
    assert drawn == [open_split(f"coco:root={coco_root}:caption=random:seed={seed}", "val").caption(0) for seed in range(8)]


def test_a_smaller_object_on_a_larger_one_keeps_its_pixels(coco_root: Path):
    path, document = _instances(coco_root)
    ann = next(a for a in document["annotations"] if a["image_id"] == 1003 and a["category_id"] == 3)
    ann["segmentation"] = compressed_rle(rect_mask(8, 6, 12, 10))  # the car now lies on the dog
    ann["bbox"], ann["area"] = [8.0, 6.0, 4.0, 4.0], 16.0
    path.write_text(json.dumps(document))
    mask = open_split(f"coco:root={coco_root}", "val").seg_mask(0)
    assert (mask[6:10, 8:12] == 2).all() and (mask[4:6, 4:20] == 3).all()


def test_an_image_missing_on_disk_is_left_out_counted_and_named(coco_root: Path):
    with pytest.warns(DataWarning, match=r"1 of 24 images named in .*instances_train2017.json are not in .*train2017: 000000000164.jpg"):
        train = open_split(f"coco:root={coco_root}", "train")
    assert len(train) == 23 and "000000000164.jpg" in train.notes[0]
    for name in ("000000000003.jpg", "000000000010.jpg"):  # 3 of 24 missing: above 5%
        (coco_root / "train2017" / name).unlink()
    with pytest.raises(DataError, match=r"(?s)3 of 24 images .* above 5%.*fix: restore the image folder"):
        open_split(f"coco:root={coco_root}", "train")


def test_missing_annotation_file_or_image_folder_is_named(coco_root: Path):
    spec = f"coco:root={coco_root}"
    (coco_root / "annotations" / "instances_train2017.json").unlink()
    with pytest.raises(DataError, match="annotation file .*instances_train2017.json does not exist"):
        available_splits(spec)
    with pytest.raises(DataError, match="instances_train2017.json does not exist"):
        open_split(spec, "train")
    shutil.rmtree(coco_root / "val2017")
    with pytest.raises(DataError, match="COCO val image folder .*val2017 does not exist"):
        open_split(spec, "val")
    with pytest.raises(DataError, match="COCO root .* does not exist"):
        available_splits(f"coco:root={coco_root / 'nope'}")


def test_captions_are_a_capability_only_with_the_captions_files(coco_root: Path):
    (coco_root / "annotations" / "captions_val2017.json").unlink()
    assert "captions" not in dataset_capabilities(f"coco:root={coco_root}")
    with pytest.raises(DataError, match="captions file .*captions_val2017.json"):
        open_split(f"coco:root={coco_root}", "val").caption(0)


def test_bad_annotations_are_skipped_and_counted_and_many_are_an_error(coco_root: Path):
    path, document = _instances(coco_root, "train")
    annotations = document["annotations"]
    first = next(a for a in annotations if a["image_id"] == 3 and a["category_id"] == 1)  # image 0's largest object, a person polygon
    first["bbox"] = [40.0, 40.0, 5.0, 5.0]  # a box outside the 32x32 image
    rle = next(a for a in annotations if a["image_id"] == 10 and isinstance(a["segmentation"], dict) and not a["iscrowd"] and a["category_id"] == 18)
    rle["segmentation"] = {"size": [64, 64], "counts": rle["segmentation"]["counts"]}  # an RLE of another size than its image
    path.write_text(json.dumps(document))
    with pytest.warns(DataWarning, match=r"2 of \d+ annotations skipped \(1 RLE of size \[64, 64\] differs .*, 1 box outside the image"):
        train = open_split(f"coco:root={coco_root}", "train")
    assert len(train) == 23 and train.classes[train.labels[0]] == "car"  # image 0 without its person: the car is the largest left
    for ann in annotations[2:12]:
        ann["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]  # two points: not a polygon
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"annotations skipped .*malformed polygon.*above 5%"):
        open_split(f"coco:root={coco_root}", "train")


def test_a_mask_or_polygon_outside_the_image_is_skipped(coco_root: Path):
    path, document = _instances(coco_root)
    ann = next(a for a in document["annotations"] if a["image_id"] == 1003 and a["category_id"] == 3)
    ann["segmentation"] = [rect_polygon(40, 40, 50, 50)]
    path.write_text(json.dumps(document))
    with pytest.warns(DataWarning, match="1 mask outside the image"):
        val = open_split(f"coco:root={coco_root}", "val")
    assert [b.label for b in val.boxes(0)] == [3] and 2 not in val.seg_mask(0)


def test_an_image_of_another_size_than_its_annotation_is_a_bad_image(coco_root: Path):
    val = open_split(f"coco:root={coco_root}", "val")
    Image.new("RGB", (40, 30)).save(val.path(3), format="JPEG")
    with pytest.raises(BadImageError, match=r"000000001024.jpg.*is 40x30 but .*instances_val2017.json says 32x32"):
        val.seg_mask(3)


def test_images_without_objects_are_left_out_and_noted(coco_root: Path):
    path, document = _instances(coco_root)
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] != 1010 or a["iscrowd"]]
    path.write_text(json.dumps(document))
    val = open_split(f"coco:root={coco_root}", "val")
    assert len(val) == 11 and "1 images without a non-crowd object left out" in val.notes[0]
    assert (val.labels >= 0).all()


def test_fingerprint_tracks_files_not_location_and_pickles_without_annotations(coco_root: Path, tmp_path: Path):
    spec = f"coco:root={coco_root}"
    before = open_split(spec, "val")
    moved = tmp_path / "elsewhere"
    shutil.copytree(coco_root, moved)
    assert open_split(f"coco:root={moved}", "val").fingerprint == before.fingerprint
    assert open_split(spec, "train").fingerprint != before.fingerprint
    state = pickle.dumps(before)
    assert len(state) < 4000
    again = pickle.loads(state)
    assert again._objects is None and np.array_equal(again.seg_mask(0), before.seg_mask(0))
    path, document = _instances(coco_root)
    document["annotations"][0]["category_id"] = 1
    path.write_text(json.dumps(document))
    assert open_split(spec, "val").fingerprint != before.fingerprint  # labels live in the feature store: annotations are content


def test_a_missing_annotation_file_is_a_usage_error_before_any_load(coco_root: Path, tmp_path: Path, capsys):
    from benchmarks import run
    from tests.benchmarks.conftest import write_tiny_checkpoint

    (coco_root / "annotations" / "instances_train2017.json").unlink()
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    assert run.main(["--encoder", str(checkpoint), "--suite", "loc", "--data", f"coco:root={coco_root}", "--out", str(tmp_path / "run")]) == 2
    assert "instances_train2017.json does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("segmentation, expected", [
    ([[1.0, 1.0, 5.0, 1.0, 5.0, 4.0]], 1),
    ([[1.0, 1.0, 5.0, 1.0, float("nan"), 4.0], [0, 0, 3, 0, 3, 3]], 1),  # the NaN polygon dropped, the int one kept
    ([[1.0, 1.0, 5.0, float("inf"), 5.0, 4.0]], "malformed polygon"),
    ([[1.0, 1.0, "5", 1.0, 5.0, 4.0]], "malformed polygon"),
    ([[1.0, 1.0, 5.0, 1.0, 5.0]], "malformed polygon"),
    ([[40.0, 1.0, 50.0, 1.0, 50.0, 4.0]], "mask outside the image"),
    ([[-9.0, 1.0, 0.0, 1.0, 0.0, 4.0]], "mask outside the image"),
])
def test_polygon_checks(segmentation, expected):
    from imagesets.coco import _polygons

    found = _polygons(segmentation, 32, 32)
    assert (len(found) == expected) if isinstance(expected, int) else found.startswith(expected)
