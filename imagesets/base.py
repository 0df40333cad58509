"""The split interface every dataset implements, and the image decoding all of them share.

An ``ImageSplit`` is one split (train / val / test) of one dataset, addressed by index. It holds only
plain data (paths, arrays, parameters), so it pickles into DataLoader workers, and it decodes images
on demand: ``load_image`` is the hot path of feature extraction.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from common.errors import DataError

IGNORE_INDEX = 255
"""Mask value for pixels that no metric should count (ADE20K "other", unlabelled pixels)."""


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels of the image as ``load_image`` returns it.

    ``x1``/``y1`` are exclusive, so ``mask[y0:y1, x0:x1]`` is the box's region and its area is
    ``(x1 - x0) * (y1 - y0)``. ``label`` is the object's class id in ``seg_classes`` (for datasets
    without masks, the image-level class id in ``classes``).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    label: int

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)


@dataclass(frozen=True)
class VQAItem:
    """A question about one image with a correct (``chosen``) and a plausible wrong (``rejected``) answer.

    ``kind`` is one of ``VQA_KINDS``. ``box`` is the region the question is about, or ``None`` when the
    question is not about one object (e.g. "How many shapes are there?").
    """

    question: str
    chosen: str
    rejected: str
    kind: str
    box: Box | None = None


VQA_KINDS = ("colour", "count", "position", "presence")

# What a dataset can provide; suites declare which of these they need (benchmarks.suites.spec.DataNeeds).
LABELS = "labels"  # image-level classes (``classes``, ``labels``)
MASKS = "masks"  # per-pixel segmentation masks (``seg_mask``, ``seg_classes``)
BOXES = "boxes"  # object boxes (``boxes``)
CAPTIONS = "captions"  # one caption per image (``caption``)
PREFERENCES = "preferences"  # questions with a chosen and a rejected answer (``vqa_items``)
IMAGE_FILES = "image_files"  # images are files on disk (``path``), e.g. for --decode gpu
CAPABILITIES = {
    LABELS: "image-level class labels",
    MASKS: "segmentation masks",
    BOXES: "object boxes",
    CAPTIONS: "image captions",
    PREFERENCES: "preference items (question, chosen, rejected)",
    IMAGE_FILES: "image files on disk",
}


class BadImageError(DataError):
    """An image file that cannot be decoded (corrupt, truncated, not an image, unsupported mode)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}",
                         "restore this file from a good copy (re-download or re-extract it), or delete it from the dataset folder")

    def __reduce__(self):  # so the error survives the trip back from a DataLoader worker
        return (type(self), (self.path, self.reason))


# 16-bit and 32-bit integer modes: values are taken to span 0..65535 (what 16-bit PNG/TIFF hold).
_WIDE_INT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    Alpha (RGBA, LA, P with transparency, ...) is composited on black, so transparent pixels read as
    black whatever colour they happen to store. 16/32-bit integer images are scaled from 0..65535 to
    0..255 (PIL's own ``convert`` clips them, which turns most 16-bit photos white). Float images
    (mode ``F``) are taken to span 0..1 when their maximum is <= 1, else 0..255.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _WIDE_INT_MODES:
        arr = np.asarray(img).astype(np.float32) / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.clip(np.nan_to_num(np.rint(arr)), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX


_STRICT_DECODE = threading.Lock()


def decode_strictly(img: Image.Image) -> None:
    """``img.load()`` with PIL's truncated-image tolerance off, whatever the process set.

    lmms-eval turns ``ImageFile.LOAD_TRUNCATED_IMAGES`` on for the whole process when it is imported,
    after which PIL pads a truncated file with grey instead of raising; the readers here promise that
    a truncated file is an error naming it. The lock keeps two threads from restoring each other's value.
    """
    with _STRICT_DECODE:
        tolerant = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            img.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = tolerant


def open_rgb(path: str | Path) -> Image.Image:
    """Decode the image file at ``path`` fully and return it as 8-bit RGB.

    Raises ``BadImageError`` naming the path for corrupt, truncated or non-image files (the decode is
    forced with ``load()`` so truncation is found here, not later inside a transform).
    """
    try:
        with Image.open(path) as img:
            decode_strictly(img)
            return to_rgb(img)
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as err:
        raise BadImageError(path, f"too many pixels ({err})") from err
    except UnidentifiedImageError as err:
        raise BadImageError(path, "not an image format PIL can identify") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadImageError(path, f"{type(err).__name__}: {err}") from err


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the image file at ``path`` from its header (nothing decoded); ``BadImageError``
    naming the path when it cannot be read."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImageError(path, f"{type(err).__name__}: {err}") from err


def hash_parts(parts: Iterable[str]) -> str:
    """First 16 hex digits of the sha256 of ``parts`` (each terminated by a newline)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


class ImageSplit:
    """One split of one dataset: images, image-level labels and, where the dataset has them, masks,
    boxes and VQA items.

    Attributes:
        spec: the dataset spec it was opened from (see ``imagesets.parse_spec``).
        split: ``train``, ``val`` or ``test``.
        name: the dataset kind (``shapes``, ``imagenet``, ...).
        classes: image-level class names; ``labels`` index into it. Empty when there are no image labels.
        seg_classes: segmentation class names that mask values index; ``[]`` when there are no masks.
        labels: int64 array (len,), ``-1`` where an image has no label.
        fingerprint: 16 hex digits identifying the split's content (file relative paths, sizes and modification times, or
            generator parameters), independent of where the data lives on disk.
        local_fingerprint: for datasets of files, 16 hex digits identifying this copy of the files as they are now
            (the fingerprint plus every file's inode and status-change time, ``files.local_identity``): a file
            renamed, swapped or rewritten in place changes it. The feature store keys on it; '' for generated data.
    """

    PARAMS: ClassVar[dict[str, Any]] = {}
    """Spec parameters (``key -> registry.Param``) that this kind accepts."""
    SPLITS: ClassVar[tuple[str, ...]] = ()
    """Split names this kind defines."""
    CAPABILITIES: ClassVar[frozenset[str]] = frozenset()
    """What this kind can provide (names from ``CAPABILITIES``), at most; see ``capabilities``."""
    notes: list[str] = []  # noqa: RUF012  (instances that skip records set their own list)
    """What opening the split skipped and why (missing images, unusable annotations); logged by the run."""

    spec: str
    split: str
    name: str
    classes: list[str]
    seg_classes: list[str]
    labels: np.ndarray
    fingerprint: str
    local_fingerprint: str = ""

    @classmethod
    def available_splits(cls, **params: Any) -> list[str]:
        """Splits that can be opened with these (resolved) spec parameters; all of ``SPLITS`` by default."""
        return list(cls.SPLITS)

    @classmethod
    def capabilities(cls, **params: Any) -> frozenset[str]:
        """What a dataset opened with these (resolved) spec parameters provides, decided without opening
        a split (cheap: at most a few file checks); ``CAPABILITIES`` by default. A kind whose optional
        files add a capability (ImageNet's LOC boxes) checks for them here."""
        return cls.CAPABILITIES

    def __len__(self) -> int:
        return int(len(self.labels))

    def load_image(self, index: int) -> Image.Image:
        """Image ``index`` as an 8-bit RGB PIL image; ``BadImageError`` if its file cannot be decoded."""
        raise NotImplementedError

    def seg_mask(self, index: int) -> np.ndarray | None:
        """(H, W) uint8 mask at the image's size: values index ``seg_classes``, 255 = ignore.

        ``None`` when the dataset has no masks.
        """
        return None

    def boxes(self, index: int) -> list[Box]:
        """Object boxes of image ``index`` (empty when the dataset has none)."""
        return []

    def vqa_items(self, index: int) -> list[VQAItem]:
        """Questions with chosen/rejected answers about image ``index`` (empty when the dataset has none)."""
        return []

    def path(self, index: int) -> Path:
        """The file of image ``index`` (datasets with the ``image_files`` capability)."""
        raise NotImplementedError(f"{self.name} has no image files")

    def caption(self, index: int) -> str:
        """A caption of image ``index`` (datasets with the ``captions`` capability)."""
        raise NotImplementedError(f"{self.name} has no captions")

    def seg_folder(self) -> Path | None:
        """The ``ADEChallengeData2016``-layout folder that holds this dataset on disk, for tools that read
        that layout directly (mmsegmentation's ADE20KDataset); None when there is none."""
        return None

    def item_id(self, index: int) -> str:
        """A stable id of item ``index`` (relative file path or generator index)."""
        raise NotImplementedError

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.name}/{self.split} with {n} items")
        return index % n if n else index

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, split={self.split!r}, n={len(self)}, fingerprint={self.fingerprint})"
