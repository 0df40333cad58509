"""Preference items for the ``grad`` suite: ``prefs:file=F``, the layout ``train/`` trains on (MMPR /
RLAIF-V: ``image``, ``question``, ``chosen``, ``rejected`` per record), as JSONL or parquet
(``imagesets.records``: image paths relative to the file, or embedded image bytes).

An optional region per item says which part of the image the question is about:
- ``box``: ``[x0, y0, x1, y1]`` in pixels of the stored image, ``x1``/``y1`` exclusive (as ``Box``);
  fractional values are widened to whole pixels (floor of x0/y0, ceiling of x1/y1);
- ``mask``: a PNG path (relative to the file) of the image's size, nonzero = inside.
With both, the region is the mask's pixels inside the box. ``vqa_items(i)`` is the record's one item
(``kind`` from the record's ``kind`` field, else ``preference``) with its ``box`` (a mask's bounding box
when only a mask is given; label 1); ``seg_mask(i)`` is the record's mask (1 inside, 0 outside) or None,
so that the region is ``box & (seg_mask == 1)`` as for the shapes world's objects. The kind does not
claim the ``masks`` or ``boxes`` capabilities: a region per question is not a segmentation or detection
dataset.

Every kept record is one item of the ``val`` split, in file order. Skipped and counted (the first few
named by line; above 5% of the file the dataset is refused with a ``DataError`` naming the file): a
record that is not a preference item, an empty question or answer, ``chosen == rejected`` (the rules of
``common.records.preference``, which ``train`` reads its preference files with), a missing image, and
for regions: a malformed or empty box, a box outside the image, a missing or unreadable mask, a
mask of another size than its image, an empty mask. Regions are checked when the split opens (the image
header and the mask are read for records that have one).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from common.records import PREFERENCE_FIELDS, preference

from .base import IMAGE_FILES, PREFERENCES, BadImageError, Box, VQAItem, decode_strictly
from .files import file_identity
from .records import Record, RecordSplit, files_capability
from .registry import Param, register_dataset

FIX = ("each record needs image, question, chosen and rejected (different, non-empty answers), and a region, when given, "
       "as box [x0, y0, x1, y1] inside the image or mask (a PNG of the image's size)")
REGION_LABEL = 1
DEFAULT_KIND = "preference"


def _box(value: Any) -> tuple[int, int, int, int] | str:
    """(x0, y0, x1, y1) in whole pixels, or why ``value`` is not a box."""
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return "malformed box (expected [x0, y0, x1, y1] in pixels)"
    x0, y0, x1, y1 = math.floor(value[0]), math.floor(value[1]), math.ceil(value[2]), math.ceil(value[3])
    if x1 <= x0 or y1 <= y0:
        return "empty box (x1 <= x0 or y1 <= y0)"
    return x0, y0, x1, y1


def read_mask(path, size: tuple[int, int]) -> np.ndarray | str:
    """(H, W) bool of a region mask PNG (nonzero = inside) that must be ``size`` = (W, H), or why not."""
    try:
        with Image.open(path) as img:
            decode_strictly(img)
            if img.size != size:
                return f"mask {img.size[0]}x{img.size[1]} differs from its image {size[0]}x{size[1]}"
            mask = np.asarray(img.convert("L")) > 0
    except FileNotFoundError:
        return "missing mask"
    except (OSError, SyntaxError, ValueError) as err:
        return f"unreadable mask ({type(err).__name__})"
    if not mask.any():
        return "empty mask"
    return mask


@register_dataset("prefs")
class PrefsSplit(RecordSplit):
    """The preference items of one table (see the module docstring)."""

    PARAMS = {"file": Param(str, help="a .jsonl (or .parquet) file of image, question, chosen, rejected records; optional box or mask")}
    SPLITS = ("val",)
    CAPABILITIES = frozenset({PREFERENCES, IMAGE_FILES})

    @classmethod
    def capabilities(cls, **params: Any) -> frozenset[str]:
        """Preference items; image files too when every image is a path (JSONL, or a parquet column of strings)."""
        return frozenset({PREFERENCES, IMAGE_FILES} if files_capability(params["file"]) else {PREFERENCES})

    def __init__(self, spec: str, split: str, file: str) -> None:
        self.spec, self.split, self.name = spec, split, "prefs"
        self.classes, self.seg_classes = [], ["outside", "region"]
        records, skips = self._read(file)
        self._require_columns(PREFERENCE_FIELDS, "name the columns question, chosen and rejected (MMPR / RLAIF-V layout)")
        kept: list[Record] = []
        self._items: list[VQAItem] = []
        self._masks: list[str] = []
        parts = []
        for record in records:
            fields = record.fields
            texts = preference(fields)
            problem = texts if isinstance(texts, str) else self._image_problem(record)
            region: tuple[Box | None, str] | str = (None, "")  # (box, mask path) or why the region is unusable
            if not problem and (fields.get("box") is not None or fields.get("mask")):
                region = self._region(record)
                problem = region if isinstance(region, str) else ""
            if problem or isinstance(region, str):
                skips.skip(record.where, problem)
                continue
            box, mask = region
            question, chosen, rejected = texts
            kind = fields.get("kind") if isinstance(fields.get("kind"), str) and fields.get("kind") else DEFAULT_KIND
            kept.append(record)
            self._items.append(VQAItem(question, chosen, rejected, kind, box))
            self._masks.append(mask)
            if mask:  # the table's own identity covers the text and boxes; a mask is a file of its own
                parts.append(f"mask {record.number}\t{mask}\t{self._identities[f'mask:{mask}']}")
        self._keep(kept, skips, FIX, parts)

    def _region(self, record: Record) -> tuple[Box, str] | str:
        """(box, mask path as written or '') of a record with a region, or why it cannot be used."""
        try:
            width, height = self.record_size(record)
        except BadImageError as err:
            return f"unreadable image ({err.reason})"
        box: Box | None = None
        if record.fields.get("box") is not None:
            found = _box(record.fields["box"])
            if isinstance(found, str):
                return found
            x0, y0, x1, y1 = found
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                return f"box {list(found)} outside the image ({width}x{height})"
            box = Box(x0, y0, x1, y1, REGION_LABEL)
        mask_path = record.fields.get("mask") or ""
        if mask_path:
            if not isinstance(mask_path, str):
                return "malformed mask (expected a PNG path)"
            mask = read_mask(self._resolve(mask_path), (width, height))
            if isinstance(mask, str):
                return f"{mask} ({mask_path})"
            path = self._resolve(mask_path)
            self._identities[f"mask:{mask_path}"] = file_identity(path, path.stat())
            if box is None:
                rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
                box = Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1, REGION_LABEL)
        assert box is not None  # a region has a box or a mask
        return box, mask_path

    def vqa_items(self, index: int) -> list[VQAItem]:
        """The record's one preference item (its ``box`` the region's box, or None without a region)."""
        return [self._items[self._check_index(index)]]

    def seg_mask(self, index: int) -> np.ndarray | None:
        """(H, W) uint8 of the record's mask: 1 inside the region, 0 outside; None without a mask."""
        mask_path = self._masks[self._check_index(index)]
        if not mask_path:
            return None
        size = self.image_size(index)
        mask = read_mask(self._resolve(mask_path), size)
        if isinstance(mask, str):
            raise BadImageError(self._resolve(mask_path), f"{mask}; it was usable when the dataset was opened: restore the file")
        return mask.astype(np.uint8)
