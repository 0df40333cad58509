"""ImageNet-1k (or any subset) in the class-folder layout ``root/{train,val}/<wnid>/*.JPEG``.

Classes are the sorted class folders of ``train``; ``val`` must have exactly the same folders.
Optional files in ``root``:
- ``LOC_synset_mapping.txt`` (``n01440764 tench, Tinca tinca`` per line): human class names (the first
  synonym; a name used by two wnids gets the wnid appended). Without it the names are the wnids.
- ``LOC_train_solution.csv`` / ``LOC_val_solution.csv`` (Kaggle ILSVRC localisation,
  ``ImageId,PredictionString`` with ``wnid xmin ymin xmax ymax ...``): object boxes, ``label`` = class
  index; xmax/ymax are taken as inclusive pixel coordinates.

``train_per_class=K`` (spec parameter, 0 = all) keeps K images of every train class, drawn without
replacement by ``seed`` (the same K images for the same seed, independent of the other classes;
a class with fewer keeps all); val is never subsampled. Both values are part of the train fingerprint.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common.errors import DataError

from .base import BOXES, IMAGE_FILES, LABELS, Box, ImageSplit, hash_parts, open_rgb
from .files import FileEntry, image_files, layout_fix, name_list, pack_paths, require_dir, subdirs, unpack_path
from .registry import Param, register_dataset

LAYOUT = (
    "  <root>/train/<wnid>/*.JPEG   (one folder per class, e.g. n01440764; .jpg/.jpeg/.png also read)\n"
    "  <root>/val/<wnid>/*.JPEG     (the same class folders as train)\n"
    "  <root>/LOC_synset_mapping.txt  (optional: human class names)"
)
SYNSET_FILE = "LOC_synset_mapping.txt"


def _human_names(root: Path, wnids: list[str]) -> list[str]:
    mapping_file = root / SYNSET_FILE
    if not mapping_file.is_file():
        return list(wnids)
    mapping: dict[str, str] = {}
    for line in mapping_file.read_text(encoding="utf-8").splitlines():
        wnid, _, names = line.strip().partition(" ")
        if wnid and names:
            mapping[wnid] = names.split(",")[0].strip()
    names = [mapping.get(w, w) for w in wnids]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [f"{name} ({w})" if counts[name] > 1 else name for name, w in zip(names, wnids, strict=True)]


def _draw(files: list[FileEntry], k: int, seed: int, wnid: str) -> list[FileEntry]:
    """``k`` of a class's (sorted) files, in folder order, drawn by a generator seeded from (seed, wnid)."""
    if len(files) <= k:
        return files
    class_key = int.from_bytes(hashlib.sha256(wnid.encode()).digest()[:8], "little")
    picked = np.random.default_rng([seed, class_key]).choice(len(files), size=k, replace=False)
    return [files[i] for i in sorted(picked)]


def _class_folders(train_dir: Path, split_dir: Path, split: str) -> list[str]:
    """The class folders (wnids) of ``train_dir``; ``split_dir`` must hold the same ones (DataError otherwise)."""
    wnids = subdirs(train_dir)
    if not wnids:
        raise DataError(f"no class folders in {train_dir}", layout_fix(LAYOUT))
    if len(wnids) < 2:
        raise DataError(f"{train_dir} has one class folder ({wnids[0]}): image-level classification needs at least 2 classes",
                        "add the other class folders (root/train/<wnid>/ and root/val/<wnid>/), or point root= at the full dataset")
    if split == "train":
        return wnids
    found = subdirs(split_dir)
    if not found and image_files(split_dir):
        raise DataError(f"{split_dir} holds images directly, not in class folders",
                        f"move each image into {split_dir}/<wnid>/ (its class from LOC_val_solution.csv or the devkit); {layout_fix(LAYOUT)}")
    missing, extra = sorted(set(wnids) - set(found)), sorted(set(found) - set(wnids))
    if missing or extra:
        raise DataError(
            f"class folders of {split_dir} differ from {train_dir}: "
            + "; ".join(([f"missing in {split}: {name_list(missing)}"] if missing else []) + ([f"not in train: {name_list(extra)}"] if extra else [])),
            "both splits need the same class folders: add the missing ones or remove the extra ones",
        )
    return wnids


@register_dataset("imagenet")
class ImageNetSplit(ImageSplit):
    """One split (train or val) of an ImageNet-style class-folder tree."""

    PARAMS = {
        "root": Param(str, help="folder holding train/ and val/"),
        "train_per_class": Param(int, default=0, min=0, help="keep this many train images per class (0: all)"),
        "seed": Param(int, default=0, min=0, help="seed of the train_per_class draw"),
    }
    SPLITS = ("train", "val")
    CAPABILITIES = frozenset({LABELS, IMAGE_FILES, BOXES})

    @classmethod
    def available_splits(cls, **params: Any) -> list[str]:
        root = Path(params["root"]).expanduser()
        require_dir(root, "ImageNet root", LAYOUT)
        return [s for s in cls.SPLITS if (root / s).is_dir()]

    @classmethod
    def capabilities(cls, **params: Any) -> frozenset[str]:
        """Labels and image files; boxes only when ``LOC_val_solution.csv`` (the localization
        challenge's val boxes) is in the root."""
        found = {LABELS, IMAGE_FILES}
        if (Path(params["root"]).expanduser() / "LOC_val_solution.csv").is_file():
            found.add(BOXES)
        return frozenset(found)

    def __init__(self, spec: str, split: str, root: str, train_per_class: int = 0, seed: int = 0) -> None:
        self.spec, self.split, self.name = spec, split, "imagenet"
        self.root = Path(root).expanduser()
        require_dir(self.root, "ImageNet root", LAYOUT)
        train_dir, split_dir = self.root / "train", self.root / split
        require_dir(train_dir, "ImageNet train folder", LAYOUT)
        require_dir(split_dir, f"ImageNet {split} folder", LAYOUT)

        self.wnids = _class_folders(train_dir, split_dir, split)
        self.classes = _human_names(self.root, self.wnids)
        self.seg_classes = []

        paths: list[str] = []
        labels: list[int] = []
        local_parts: list[str] = []
        parts = ["imagenet", f"split={split}", *self.wnids]
        subsample = train_per_class if split == "train" else 0
        if subsample:
            parts.append(f"train_per_class={subsample}:seed={seed}")
        empty = []
        for label, wnid in enumerate(self.wnids):
            files = image_files(split_dir / wnid)
            if not files:
                empty.append(wnid)
            if subsample:
                files = _draw(files, subsample, seed, wnid)
            for name, identity, local in files:
                rel = f"{wnid}/{name}"
                paths.append(rel)
                labels.append(label)
                parts.append(f"{rel}\t{identity}")
                local_parts.append(local)
        if not paths:
            raise DataError(f"no images (.JPEG/.jpg/.jpeg/.png) in the class folders of {split_dir}", layout_fix(LAYOUT))
        if empty:
            raise DataError(f"empty class folder(s) in {split_dir}: {name_list(empty)}",
                            "every class needs at least one image in each split: restore its images, or remove the class from both splits")
        self._paths = pack_paths(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.fingerprint = hash_parts(parts)
        self.local_fingerprint = hash_parts([self.fingerprint, "\n".join(local_parts)])  # same order as the fingerprint's files
        self._boxes: dict[str, list[Box]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_boxes"] = None  # re-read on demand; workers rarely need boxes
        return state

    def path(self, index: int) -> Path:
        """Absolute path of image ``index``."""
        return self.root / self.split / unpack_path(self._paths, self._check_index(index))

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.path(index))

    def item_id(self, index: int) -> str:
        """``<split>/<wnid>/<file name>``."""
        return f"{self.split}/{unpack_path(self._paths, self._check_index(index))}"

    def boxes(self, index: int) -> list[Box]:
        """Boxes from ``LOC_<split>_solution.csv`` when that file exists, else empty."""
        if self._boxes is None:
            self._boxes = self._read_boxes()
        stem = Path(unpack_path(self._paths, self._check_index(index))).stem
        return list(self._boxes.get(stem, []))

    def _read_boxes(self) -> dict[str, list[Box]]:
        csv_file = self.root / f"LOC_{self.split}_solution.csv"
        if not csv_file.is_file():
            return {}
        index_of = {w: i for i, w in enumerate(self.wnids)}
        boxes: dict[str, list[Box]] = {}
        with csv_file.open(newline="", encoding="utf-8") as handle:
            for row_no, row in enumerate(csv.DictReader(handle), start=2):
                fields = (row.get("PredictionString") or "").split()
                if len(fields) % 5:
                    raise DataError(f"{csv_file}:{row_no}: PredictionString must hold groups of 'wnid xmin ymin xmax ymax'",
                                    "restore the file from the ImageNet localization (Kaggle LOC) archive")
                found = []
                for k in range(0, len(fields), 5):
                    wnid = fields[k]
                    if wnid not in index_of:
                        raise DataError(f"{csv_file}:{row_no}: wnid {wnid} is not a class folder of {self.root / 'train'}",
                                        "use the LOC file of the classes you have, or add the class folder")
                    x0, y0, x1, y1 = (int(float(v)) for v in fields[k + 1 : k + 5])
                    found.append(Box(x0, y0, x1 + 1, y1 + 1, index_of[wnid]))
                boxes[row["ImageId"]] = found
        return boxes
