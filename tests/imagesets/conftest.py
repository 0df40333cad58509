"""Fixtures that write tiny datasets in the exact on-disk layouts of the real ones."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (24, 20), seed: int = 0, fmt: str | None = None) -> Path:
    """A small noisy RGB image (noise, so JPEG truncation really loses data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path, format=fmt)
    return path


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    """root/{train,val}/<wnid>/*.JPEG with 3 classes, 3 train and 2 val images each, plus the synset file."""
    root = tmp_path / "imagenet"
    wnids = ["n01440764", "n01443537", "n02102040"]
    for c, wnid in enumerate(wnids):
        for k in range(3):
            write_image(root / "train" / wnid / f"{wnid}_{k}.JPEG", seed=10 * c + k, fmt="JPEG")
        for k in range(2):
            write_image(root / "val" / wnid / f"ILSVRC2012_val_{c}{k:07d}.JPEG", seed=100 + 10 * c + k, fmt="JPEG")
    (root / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn02102040 English springer, English springer spaniel\n"
    )
    return root


@pytest.fixture
def ade_root(tmp_path: Path) -> Path:
    """ADEChallengeData2016/{images,annotations}/{training,validation} with 2 + 1 images."""
    root = tmp_path / "ADEChallengeData2016"
    for sub, stems in (("training", ["ADE_train_00000001", "ADE_train_00000002"]), ("validation", ["ADE_val_00000001"])):
        for k, stem in enumerate(stems):
            write_image(root / "images" / sub / f"{stem}.jpg", size=(16, 12), seed=k, fmt="JPEG")
            ann = np.zeros((12, 16), np.uint8)  # 0 = "other"
            ann[2:5, 3:9] = 1  # wall
            ann[6:10, 10:15] = 150  # flag
            ann[0, 0] = 13 + k  # person (k=0) / earth (k=1): a single pixel
            ann_dir = root / "annotations" / sub
            ann_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ann, "L").save(ann_dir / f"{stem}.png")
    return root
