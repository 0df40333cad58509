from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import DataError
from imagesets import BadImageError, open_split

from .conftest import write_image


def test_reads_class_folders(imagenet_root: Path):
    train = open_split(f"imagenet:root={imagenet_root}", "train")
    val = open_split(f"imagenet:root={imagenet_root}", "val")
    assert len(train) == 9 and len(val) == 6
    assert train.wnids == ["n01440764", "n01443537", "n02102040"]
    assert train.classes == ["tench", "goldfish", "English springer"]
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and val.labels.dtype == np.int64
    assert train.item_id(4) == "train/n01443537/n01443537_1.JPEG"
    img = val.load_image(5)
    assert img.mode == "RGB" and img.size == (24, 20)
    assert train.seg_mask(0) is None and train.boxes(0) == [] and train.seg_classes == []
    assert train.fingerprint != val.fingerprint


def test_names_fall_back_to_wnids(imagenet_root: Path):
    (imagenet_root / "LOC_synset_mapping.txt").unlink()
    assert open_split(f"imagenet:root={imagenet_root}", "train").classes[0] == "n01440764"


def test_other_extensions_any_case_and_stray_files(imagenet_root: Path):
    folder = imagenet_root / "train" / "n01440764"
    write_image(folder / "extra.png")
    write_image(folder / "Other.JPG", fmt="JPEG")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0")
    assert len(open_split(f"imagenet:root={imagenet_root}", "train")) == 11


def test_grey_cmyk_and_alpha_files_load_as_rgb(imagenet_root: Path):
    folder = imagenet_root / "train" / "n01440764"
    Image.new("L", (5, 5), 80).save(folder / "a_grey.JPEG")
    Image.new("CMYK", (5, 5), (0, 0, 0, 0)).save(folder / "b_cmyk.JPEG")
    Image.new("RGBA", (5, 5), (10, 20, 30, 0)).save(folder / "c_alpha.png")
    split = open_split(f"imagenet:root={imagenet_root}", "train")
    for i in range(3):
        img = split.load_image(i)
        assert img.mode == "RGB" and np.asarray(img).shape == (5, 5, 3)


def test_corrupt_and_truncated_files_name_the_path(imagenet_root: Path):
    folder = imagenet_root / "val" / "n01443537"
    bad = folder / "ILSVRC2012_val_10000000.JPEG"
    data = write_image(folder / "big.JPEG", size=(64, 64), fmt="JPEG").read_bytes()
    (folder / "big.JPEG").unlink()
    bad.write_bytes(data[: len(data) // 3])
    split = open_split(f"imagenet:root={imagenet_root}", "val")
    index = [split.item_id(i) for i in range(len(split))].index("val/n01443537/ILSVRC2012_val_10000000.JPEG")
    with pytest.raises(BadImageError, match="ILSVRC2012_val_10000000.JPEG") as info:
        split.load_image(index)
    assert info.value.path == str(bad)
    bad.write_bytes(b"definitely not a jpeg")
    with pytest.raises(BadImageError):
        split.load_image(index)


def test_fingerprint_tracks_files_not_location(imagenet_root: Path, tmp_path: Path):
    spec = f"imagenet:root={imagenet_root}"
    before = open_split(spec, "train").fingerprint
    assert open_split(spec, "train").fingerprint == before
    moved = tmp_path / "elsewhere"
    shutil.copytree(imagenet_root, moved)
    assert open_split(f"imagenet:root={moved}", "train").fingerprint == before
    write_image(imagenet_root / "train" / "n02102040" / "new.JPEG", fmt="JPEG")
    added = open_split(spec, "train").fingerprint
    assert added != before
    write_image(imagenet_root / "train" / "n02102040" / "new.JPEG", size=(40, 40), fmt="JPEG")
    assert open_split(spec, "train").fingerprint != added  # same names, different size


def test_val_class_folders_must_match_train(imagenet_root: Path):
    shutil.rmtree(imagenet_root / "val" / "n01443537")
    write_image(imagenet_root / "val" / "n09999999" / "x.JPEG", fmt="JPEG")
    with pytest.raises(ValueError, match=r"missing in val: n01443537.*not in train: n09999999"):
        open_split(f"imagenet:root={imagenet_root}", "val")
    assert len(open_split(f"imagenet:root={imagenet_root}", "train")) == 9


def test_empty_splits_and_folders_are_errors(imagenet_root: Path):
    for f in (imagenet_root / "val" / "n01443537").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="empty class folder.*n01443537"):
        open_split(f"imagenet:root={imagenet_root}", "val")
    for d in (imagenet_root / "val").iterdir():
        for f in d.iterdir():
            f.unlink()
    with pytest.raises(ValueError, match=f"no images .* in the class folders of {imagenet_root / 'val'}"):
        open_split(f"imagenet:root={imagenet_root}", "val")


def test_flat_val_layout_is_explained(imagenet_root: Path):
    shutil.rmtree(imagenet_root / "val")
    write_image(imagenet_root / "val" / "ILSVRC2012_val_00000001.JPEG", fmt="JPEG")
    with pytest.raises(ValueError, match="not in class folders"):
        open_split(f"imagenet:root={imagenet_root}", "val")


def test_missing_root_or_split_names_path_and_layout(tmp_path: Path, imagenet_root: Path):
    with pytest.raises(DataError, match=f"(?s){tmp_path / 'nowhere'} does not exist\n  fix: expected layout: <root>/train/<wnid>"):
        open_split(f"imagenet:root={tmp_path / 'nowhere'}", "train")
    shutil.rmtree(imagenet_root / "val")
    with pytest.raises(DataError, match="ImageNet val folder"):
        open_split(f"imagenet:root={imagenet_root}", "val")


def test_boxes_from_localisation_csv(imagenet_root: Path):
    (imagenet_root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_10000000,n01443537 1 2 10 12 n01443537 0 0 4 4 \n"
        "ILSVRC2012_val_00000000,n01440764 3 3 7 9\n"
    )
    val = open_split(f"imagenet:root={imagenet_root}", "val")
    ids = [val.item_id(i) for i in range(len(val))]
    boxes = val.boxes(ids.index("val/n01443537/ILSVRC2012_val_10000000.JPEG"))
    assert [(b.x0, b.y0, b.x1, b.y1, b.label) for b in boxes] == [(1, 2, 11, 13, 1), (0, 0, 5, 5, 1)]
    assert val.boxes(ids.index("val/n01440764/ILSVRC2012_val_00000001.JPEG")) == []


def test_train_per_class_draws_the_same_images_for_the_same_seed(imagenet_root: Path):
    for wnid in ("n01440764", "n01443537"):
        for i in range(3, 9):
            write_image(imagenet_root / "train" / wnid / f"{wnid}_{i}.JPEG", seed=i)
    spec = f"imagenet:root={imagenet_root}"
    full = open_split(spec, "train")
    first = open_split(f"{spec}:train_per_class=2:seed=3", "train")
    again = open_split(f"{spec}:train_per_class=2:seed=3", "train")
    other = open_split(f"{spec}:train_per_class=2:seed=4", "train")
    ids = lambda split: [split.item_id(i) for i in range(len(split))]  # noqa: E731
    assert len(full) == 21 and len(first) == 6 and first.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ids(first) == ids(again) and first.fingerprint == again.fingerprint
    assert ids(first) != ids(other) and first.fingerprint != other.fingerprint
    assert set(ids(first)) <= set(ids(full)) and first.fingerprint != full.fingerprint
    # The val split is never subsampled, and its fingerprint does not depend on the train draw.
    assert open_split(f"{spec}:train_per_class=2:seed=3", "val").fingerprint == open_split(spec, "val").fingerprint
    # A class with fewer images than K keeps all of them.
    assert len(open_split(f"{spec}:train_per_class=100", "train")) == 21
    with pytest.raises(ValueError, match="train_per_class"):
        open_split(f"{spec}:train_per_class=-1", "train")
