"""ADE20K SceneParsing (``ADEChallengeData2016``): 150 classes, per-pixel annotations.

Layout: ``root/images/{training,validation}/<stem>.jpg`` with ``root/annotations/{…}/<stem>.png``.
Annotation pixels hold 0 = "other" (not evaluated) and 1..150 = classes. Masks follow the
mmsegmentation convention (``reduce_zero_label=True``): 0 -> 255 (ignore), k -> k - 1, so mask values
index ``seg_classes`` = the 150 class names and there is no 'background' class. ADE20K has no
image-level labels: ``classes`` is empty and ``labels`` are all -1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.errors import DataError

from .base import BOXES, IGNORE_INDEX, IMAGE_FILES, MASKS, BadImageError, Box, ImageSplit, decode_strictly, hash_parts, image_size, open_rgb
from .files import image_files, layout_fix, name_list, require_dir
from .registry import Param, register_dataset

# mmsegmentation's ADE20KDataset.METAINFO['classes'] (its 'bed ' written without the trailing space).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)  # fmt: skip
assert len(ADE20K_CLASSES) == 150

SPLIT_DIRS = {"train": "training", "val": "validation"}
LAYOUT = (
    "  <root>/images/training/*.jpg        <root>/annotations/training/*.png\n"
    "  <root>/images/validation/*.jpg      <root>/annotations/validation/*.png\n"
    "  (root is the ADEChallengeData2016 folder; an annotation has its image's file stem)"
)


def _reduce_zero_label(annotation: np.ndarray) -> np.ndarray:
    # uint8 wrap-around turns 0 ("other") into 255 (ignore) and k into k - 1, as mmseg does.
    return (annotation.astype(np.uint8) - np.uint8(1)).astype(np.uint8)


@register_dataset("ade20k")
class ADE20KSplit(ImageSplit):
    """One split (train = training, val = validation) of ADEChallengeData2016."""

    PARAMS = {"root": Param(str, help="the ADEChallengeData2016 folder")}
    SPLITS = ("train", "val")
    CAPABILITIES = frozenset({MASKS, BOXES, IMAGE_FILES})

    @classmethod
    def available_splits(cls, **params: Any) -> list[str]:
        root = Path(params["root"]).expanduser()
        require_dir(root, "ADE20K root", LAYOUT)
        return [s for s in cls.SPLITS if (root / "images" / SPLIT_DIRS[s]).is_dir()]

    def __init__(self, spec: str, split: str, root: str) -> None:
        self.spec, self.split, self.name = spec, split, "ade20k"
        self.root = Path(root).expanduser()
        require_dir(self.root, "ADE20K root", LAYOUT)
        sub = SPLIT_DIRS[split]
        self.image_dir, self.annotation_dir = self.root / "images" / sub, self.root / "annotations" / sub
        require_dir(self.image_dir, f"ADE20K {split} image folder", LAYOUT)
        require_dir(self.annotation_dir, f"ADE20K {split} annotation folder", LAYOUT)

        images = image_files(self.image_dir)
        if not images:
            raise DataError(f"no images (.jpg/.jpeg/.png) in {self.image_dir}", layout_fix(LAYOUT))
        annotations = {entry.name: entry for entry in image_files(self.annotation_dir, (".png",))}
        by_stem = {Path(name).stem: name for name in annotations}
        missing = [entry.name for entry in images if Path(entry.name).stem not in by_stem]
        if missing:
            raise DataError(f"{len(missing)} image(s) in {self.image_dir} have no annotation <stem>.png in {self.annotation_dir}: {name_list(missing)}",
                            "restore the annotations from the ADEChallengeData2016 archive, or remove the images without one")
        self._images = [entry.name for entry in images]
        self._annotations = [by_stem[Path(name).stem] for name in self._images]
        self.classes = []
        self.seg_classes = list(ADE20K_CLASSES)
        self.labels = np.full(len(images), -1, dtype=np.int64)
        parts = ["ade20k", f"split={split}"]
        local_parts = []
        for entry, ann in zip(images, self._annotations, strict=True):
            parts.append(f"{entry.name}\t{entry.identity}\t{ann}\t{annotations[ann].identity}")
            local_parts.append(f"{entry.local}\t{annotations[ann].local}")
        self.fingerprint = hash_parts(parts)
        self.local_fingerprint = hash_parts([self.fingerprint, "\n".join(local_parts)])  # same order as the fingerprint's files

    def seg_folder(self) -> Path:
        """The root itself: it is an ADEChallengeData2016 folder."""
        return self.root

    def path(self, index: int) -> Path:
        """Absolute path of image ``index`` (the ``image_files`` capability)."""
        return self.image_path(index)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._images[self._check_index(index)]

    def annotation_path(self, index: int) -> Path:
        return self.annotation_dir / self._annotations[self._check_index(index)]

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.image_path(index))

    def item_id(self, index: int) -> str:
        """``images/<training|validation>/<file name>``."""
        return f"images/{SPLIT_DIRS[self.split]}/{self._images[self._check_index(index)]}"

    def seg_mask(self, index: int) -> np.ndarray:
        """(H, W) uint8: 0..149 index ``seg_classes``, 255 = ignore (ADE's 0, "other")."""
        path = self.annotation_path(index)
        try:
            with Image.open(path) as ann:
                decode_strictly(ann)
                mode, size, raw = ann.mode, ann.size, np.array(ann)
        except UnidentifiedImageError as err:
            raise BadImageError(path, "not an image format PIL can identify") from err
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise BadImageError(path, f"{type(err).__name__}: {err}") from err
        if raw.ndim != 2 or mode not in ("L", "P", "I", "I;16"):
            raise BadImageError(path, f"annotation has mode {mode}; expected single-channel class indices 0..150 (SceneParsing format)")
        if raw.size and int(raw.max()) > len(ADE20K_CLASSES):
            raise BadImageError(path, f"annotation holds value {int(raw.max())}; ADE20K SceneParsing values are 0..150")
        image_path = self.image_path(index)
        actual = image_size(image_path)
        if size != actual:
            raise BadImageError(path, f"annotation is {size[0]}x{size[1]} but its image {image_path} is {actual[0]}x{actual[1]}")
        return _reduce_zero_label(raw)

    def boxes(self, index: int) -> list[Box]:
        """One box per class present (the extent of all its pixels, possibly several regions), by class id."""
        mask = self.seg_mask(index)
        found = []
        for cls in np.unique(mask):
            if cls == IGNORE_INDEX:
                continue
            hit = mask == cls
            rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
            found.append(Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1, int(cls)))
        return found
