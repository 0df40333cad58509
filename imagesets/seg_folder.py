"""Splits with masks as an ``ADEChallengeData2016``-layout folder, the files mmsegmentation reads.

A real ADE20K root is used as it is. Any other dataset with masks (the shapes world) is written once
into the cache: ``images/{training,validation}/<index>.png`` (lossless) and
``annotations/{…}/<index>.png`` holding class + 1 (0 = ignore), so mmseg's ``reduce_zero_label``
gives back the dataset's own class ids. The folder is keyed by both splits' fingerprints and marked
complete by ``done.json``, written last.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import DataError

from .base import IGNORE_INDEX, ImageSplit, hash_parts

SUBDIRS = {"train": "training", "val": "validation"}


def item_stem(index: int) -> str:
    return f"{index:07d}"


def export_seg_folder(train: ImageSplit, val: ImageSplit, cache_dir: str | os.PathLike) -> Path:
    """The ``ADEChallengeData2016``-layout folder of ``train`` and ``val`` under ``cache_dir/seg-folders``."""
    root = Path(cache_dir) / "seg-folders" / hash_parts([train.fingerprint, val.fingerprint, "ade-layout-v1"])
    if (root / "done.json").exists():
        return root
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in (train, val):
        images, annotations = tmp / "images" / SUBDIRS[split.split], tmp / "annotations" / SUBDIRS[split.split]
        images.mkdir(parents=True)
        annotations.mkdir(parents=True)
        for index in range(len(split)):
            mask = split.seg_mask(index)
            if mask is None:
                raise ValueError(f"{split.spec}/{split.split} has no segmentation masks; the seg suite needs per-pixel labels")
            image = split.load_image(index)
            if mask.shape != (image.size[1], image.size[0]):
                raise DataError(f"{split.spec}/{split.split} item {split.item_id(index)}: mask {mask.shape[1]}x{mask.shape[0]} but image {image.size[0]}x{image.size[1]}",
                                "a mask has its image's size: restore the mask or the image")
            stored = np.where(mask == IGNORE_INDEX, 0, mask.astype(np.int64) + 1)
            if stored.max() > 255:
                raise ValueError(f"{split.spec}: class ids above 254 do not fit an 8-bit annotation")
            image.save(images / f"{item_stem(index)}.png", compress_level=1)  # lossless either way; 1 is the fast setting
            Image.fromarray(stored.astype(np.uint8), mode="L").save(annotations / f"{item_stem(index)}.png", compress_level=1)
    (tmp / "done.json").write_text(json.dumps({"train": train.fingerprint, "val": val.fingerprint, "classes": list(train.seg_classes)}))
    try:
        os.replace(tmp, root)
    except OSError:  # another run finished the same folder first
        shutil.rmtree(tmp, ignore_errors=True)
    return root
