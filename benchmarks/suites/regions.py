"""Object regions of a dataset item in the encoder's input frame, shared by the ``loc`` and ``grad``
suites: boxes and masks are carried through the same resize + centre-crop as the image, so a map over
the encoder's patch grid and the region cover the same pixels. A region is what the dataset declares
(``boxes``, ``seg_mask``, a ``VQAItem``'s box), never guessed from the dataset's kind."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from encoders import PreprocessConfig
from imagesets import Box, ImageSplit, VQAItem


def spread_indices(n: int, limit: int) -> list[int]:
    """At most ``limit`` indices spread evenly over ``range(n)`` (all when ``limit <= 0`` or ``>= n``);
    evenly spaced, not the first ones, because many datasets are sorted by class."""
    if limit <= 0 or limit >= n:
        return list(range(n))
    return sorted({round(v) for v in np.linspace(0, n - 1, limit)})


def box_region(boxes: list[Box], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the union of ``boxes``."""
    region = np.zeros(shape, dtype=bool)
    for box in boxes:
        region[max(0, box.y0) : box.y1, max(0, box.x0) : box.x1] = True
    return region


def to_encoder_frame(region: np.ndarray, preprocess: PreprocessConfig) -> torch.Tensor:
    """A (H, W) bool region of the original image as (R, R) bool in the encoder's input: the image's
    resize rule (``PreprocessConfig.geometry``, nearest), e.g. shorter side to R / crop_pct and centre crop."""
    image = preprocess.geometry("nearest")(Image.fromarray(region.astype(np.uint8) * 255, "L"))
    return torch.from_numpy(np.asarray(image) > 127)


def class_region(split: ImageSplit, index: int, label: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(box, mask) of image ``index``'s object of image-level class ``label``, both (H, W) bool in the
    original image, or None when the item has neither. Without a mask, the box stands in for it;
    without a box, the mask's bounding box is used."""
    name = split.classes[label]
    mask = split.seg_mask(index)
    seg_id = split.seg_classes.index(name) if mask is not None and name in split.seg_classes else None
    object_mask = (mask == seg_id) if seg_id is not None else None
    box_label = seg_id if split.seg_classes else label
    boxes = [box for box in split.boxes(index) if box.label == box_label]
    if object_mask is not None and not object_mask.any():
        object_mask = None
    if not boxes and object_mask is None:
        return None
    shape = object_mask.shape if object_mask is not None else split.load_image(index).size[::-1]
    if boxes:
        box = box_region(boxes, shape)
    else:
        rows, cols = np.flatnonzero(object_mask.any(axis=1)), np.flatnonzero(object_mask.any(axis=0))
        box = box_region([Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1, box_label)], shape)
    return box, (object_mask if object_mask is not None else box)


def item_region(split: ImageSplit, index: int, item: VQAItem) -> np.ndarray | None:
    """(H, W) bool: the region a preference item is about in image ``index``, or None when the item has
    no box. The object's mask inside the item's box (pixels of the box whose mask value is the box's
    label) when the dataset has a mask for the image, else the box; the box when that intersection is empty."""
    if item.box is None:
        return None
    mask = split.seg_mask(index)
    box = box_region([item.box], mask.shape if mask is not None else split.load_image(index).size[::-1])
    region = box & (mask == item.box.label) if mask is not None else box
    return region if region.any() else box
