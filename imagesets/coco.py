"""COCO (2014 / 2017) in its own layout: object boxes, instance masks, captions and an image-level label.

Layout (``coco:root=DIR[:year=2017]``)::

    <root>/annotations/instances_{train,val}<year>.json   (required for a split)
    <root>/annotations/captions_{train,val}<year>.json    (optional: captions)
    <root>/{train,val}<year>/*.jpg

- ``classes``: the 80 categories' names in category-id order; ``labels``: the category of the image's
  largest object (the non-crowd annotation with the largest ``area``, COCO's segment area in pixels;
  the first in the file on a tie). Images without any non-crowd object (48 of val2017's 5000) are left
  out of the split, so every item has a label.
- Masks (``seg_mask``): a semantic mask of the 80 categories plus background, read with ``pycocotools``
  (polygons, RLE and uncompressed RLE): 0 = background, k = ``seg_classes[k]`` = ``classes[k - 1]``,
  255 = ignore for crowd regions (``iscrowd = 1``: a group of objects, not one). Crowd regions are drawn
  first, then the objects from the largest to the smallest area, so a smaller object lying on a larger
  one keeps its pixels. These are COCO's thing classes only, not COCO-Stuff: numbers are not
  comparable with COCO-Stuff-164k results.
- Boxes (``boxes``): one per non-crowd object, COCO's ``[x, y, width, height]`` widened to whole pixels
  (floor of x, y; ceiling of x + width, y + height) and clipped to the image, ``label`` = its mask value.
  Crowd regions have no box.
- Captions (``caption``, when the split's captions file exists): the first of the image's captions in
  the file (``caption=first``, default), or one drawn per image with ``seed`` (``caption=random``).

Bad input: a missing annotation file or image folder is an error naming it. An image the annotations
name that is not in the image folder is left out, counted and named; an annotation that cannot be used
(unknown image or category, a box or mask outside the image, a malformed polygon, an RLE of another
size than its image) is skipped and counted. Either above 5% is an error naming the file. A file whose
size differs from its ``width``/``height`` in the annotations is a ``BadImageError`` when its mask or
boxes are read.

Opening a split parses its instances file; ``json.load`` is most of the cost (a synthetic file of
val2017's size, 19 MB with 5000 images and 36,781 polygon annotations, opens in 3-4 s on this project's
loaded 2-core test machine, 2.3 s of it ``json.load``; train2017's file is about 23 times larger, and its
parsed form takes a few GB of memory, as ``pycocotools.coco.COCO``'s does). The annotations are kept per
process and left out when the split is pickled into DataLoader workers (which only decode images).
"""
from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common.errors import DataError

from .base import BOXES, CAPTIONS, IGNORE_INDEX, IMAGE_FILES, LABELS, MASKS, BadImageError, Box, ImageSplit, hash_parts, image_size, open_rgb
from .files import file_identity, image_files, layout_fix, name_list, pack_paths, require_dir, unpack_path
from .records import MAX_BAD_FRACTION, DataWarning
from .registry import Param, register_dataset

FORMAT_VERSION = 1
"""Bump when what a split holds for the same files changes (labels, masks, the images kept)."""
LAYOUT = (
    "  <root>/annotations/instances_{train,val}<year>.json\n"
    "  <root>/annotations/captions_{train,val}<year>.json   (optional: captions)\n"
    "  <root>/{train,val}<year>/*.jpg"
)


@dataclass(frozen=True)
class CocoObject:
    """One usable annotation: its class (index into ``classes``), crowd flag, area (pixels), box in
    whole pixels (clipped to the image) and segmentation as stored (polygons, RLE or uncompressed RLE)."""

    label: int
    crowd: bool
    area: float
    box: tuple[int, int, int, int]
    segmentation: Any


@dataclass
class _Instances:
    """What a split reads from its instances file."""

    classes: list[str]
    images: list[tuple[int, str, int, int]]  # (image id, file name, width, height) of the images kept, by id
    objects: dict[int, list[CocoObject]]  # image id -> its usable annotations, file order
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    total: int = 0
    without_objects: int = 0

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{example}: {reason}")


def _paths(root: Path, split: str, year: str) -> tuple[Path, Path, Path]:
    """(instances file, captions file, image folder) of ``split``."""
    notes = root / "annotations"
    return notes / f"instances_{split}{year}.json", notes / f"captions_{split}{year}.json", root / f"{split}{year}"


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DataError(f"COCO {what} file {path} does not exist", layout_fix(LAYOUT))
    try:
        with path.open("rb") as handle:
            document = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})", "restore the file from the COCO annotations archive") from None
    keys = ("images", "annotations") + (("categories",) if what == "instances" else ())
    if not isinstance(document, dict) or not all(isinstance(document.get(key), list) for key in keys):
        raise DataError(f"{path}: not a COCO {what} file (needs the lists {', '.join(keys)})", "restore the file from the COCO annotations archive")
    return document


def _polygons(segmentation: list, width: int, height: int) -> list[list[float]] | str:
    """The usable polygons (>= 3 points, finite numbers) of a polygon segmentation, or why there are none."""
    kept = []
    x_min = y_min = math.inf
    x_max = y_max = -math.inf
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            continue
        try:  # builtins over the list: C speed (train2017 has 860k polygons); a NaN or inf makes the sum non-finite
            finite = math.isfinite(sum(polygon))
            xs, ys = polygon[0::2], polygon[1::2]
            bounds = (min(xs), min(ys), max(xs), max(ys))
        except TypeError:
            continue
        if not finite:
            continue
        kept.append(polygon)
        x_min, y_min, x_max, y_max = min(x_min, bounds[0]), min(y_min, bounds[1]), max(x_max, bounds[2]), max(y_max, bounds[3])
    if not kept:
        return "malformed polygon (fewer than 3 points)"
    if x_max <= 0 or x_min >= width or y_max <= 0 or y_min >= height:
        return "mask outside the image"
    return kept


def _object(annotation: dict, labels: dict[int, int], width: int, height: int) -> CocoObject | str:
    """The annotation as a CocoObject, or why it cannot be used."""
    if annotation.get("category_id") not in labels:
        return "unknown category"
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox) or not math.isfinite(sum(bbox)):
        return "malformed box"
    x, y, w, h = bbox
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    if w <= 0 or h <= 0 or x1 <= x0 or y1 <= y0:
        return "box outside the image" if w > 0 and h > 0 else "empty box"
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        segmentation = _polygons(segmentation, width, height)
        if isinstance(segmentation, str):
            return segmentation
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, list)):
        if list(segmentation.get("size") or []) != [height, width]:
            return f"RLE of size {segmentation.get('size')} differs from its image [{height}, {width}]"
    else:
        return "no segmentation (polygons or RLE)"
    area = annotation.get("area")
    area = float(area) if isinstance(area, (int, float)) and math.isfinite(area) else float(w * h)
    return CocoObject(labels[annotation["category_id"]], bool(annotation.get("iscrowd", 0)), area, (x0, y0, x1, y1), segmentation)


def read_instances(path: Path) -> _Instances:
    """The classes, the images with at least one non-crowd object, and their usable annotations."""
    document = _read_json(path, "instances")
    categories = sorted((c for c in document["categories"] if isinstance(c, dict) and "id" in c), key=lambda c: c["id"])
    if not categories:
        raise DataError(f"{path}: no categories", "a COCO instances file lists its categories (id, name): restore it from the COCO annotations archive")
    labels = {c["id"]: k for k, c in enumerate(categories)}
    sizes: dict[int, tuple[str, int, int]] = {}
    found = _Instances([str(c.get("name", c["id"])) for c in categories], [], {})
    for image in document["images"]:
        try:
            sizes[int(image["id"])] = (str(image["file_name"]), int(image["width"]), int(image["height"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: an image entry lacks id, file_name, width or height ({str(image)[:120]})",
                            "restore the file from the COCO annotations archive") from None
    for annotation in document["annotations"]:
        found.total += 1
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        where = f"annotation {annotation.get('id') if isinstance(annotation, dict) else '?'}"
        if image_id not in sizes:
            found.skip("unknown image id", where)
            continue
        name, width, height = sizes[image_id]
        obj = _object(annotation, labels, width, height)
        if isinstance(obj, str):
            found.skip(obj, f"{where} ({name})")
            continue
        found.objects.setdefault(image_id, []).append(obj)
    for image_id in sorted(sizes):
        if any(not obj.crowd for obj in found.objects.get(image_id, [])):
            found.images.append((image_id, *sizes[image_id]))
        else:
            found.without_objects += 1
            found.objects.pop(image_id, None)
    del document
    return found


def _largest(objects: list[CocoObject]) -> int:
    """The label of the largest non-crowd object (the first in the file on a tie)."""
    best = max((obj for obj in objects if not obj.crowd), key=lambda obj: obj.area)
    return best.label


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """(H, W) bool of a COCO segmentation (polygons, RLE with string counts, or uncompressed RLE)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    with warnings.catch_warnings():  # pycocotools 2.0.11's decode under numpy 2: a DeprecationWarning about __array__(copy=), harmless
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


@register_dataset("coco")
class CocoSplit(ImageSplit):
    """One split (train or val) of COCO (see the module docstring and docs/datasets.md)."""

    PARAMS = {
        "root": Param(str, help="folder holding annotations/ and {train,val}<year>/"),
        "year": Param(str, default="2017", help="the release in the file names (2017, 2014)"),
        "caption": Param(str, default="first", choices=("first", "random"), help="which of an image's captions: the first in the file, or one drawn with seed"),
        "seed": Param(int, default=0, min=0, help="seed of caption=random"),
    }
    SPLITS = ("train", "val")
    CAPABILITIES = frozenset({LABELS, MASKS, BOXES, IMAGE_FILES, CAPTIONS})

    @classmethod
    def available_splits(cls, **params: Any) -> list[str]:
        """Splits with both their instances file and their image folder; DataError naming the
        missing one when a split has only one of them, or when the root has no split at all."""
        root = Path(params["root"]).expanduser()
        require_dir(root, "COCO root", LAYOUT)
        found = []
        for split in cls.SPLITS:
            instances, _, images = _paths(root, split, params["year"])
            if instances.is_file() and images.is_dir():
                found.append(split)
            elif instances.is_file() or images.is_dir():
                missing = f"image folder {images}" if instances.is_file() else f"annotation file {instances}"
                raise DataError(f"COCO {split} split: the {missing} does not exist", layout_fix(LAYOUT))
        if not found:
            raise DataError(f"COCO root {root} has no split (neither annotations/instances_val{params['year']}.json with val{params['year']}/ nor train)", layout_fix(LAYOUT))
        return found

    @classmethod
    def capabilities(cls, **params: Any) -> frozenset[str]:
        """Labels, masks, boxes and image files; captions when every split with an instances file also
        has its captions file."""
        root = Path(params["root"]).expanduser()
        splits = [s for s in cls.SPLITS if _paths(root, s, params["year"])[0].is_file()]
        found = {LABELS, MASKS, BOXES, IMAGE_FILES}
        if splits and all(_paths(root, s, params["year"])[1].is_file() for s in splits):
            found.add(CAPTIONS)
        return frozenset(found)

    def __init__(self, spec: str, split: str, root: str, year: str = "2017", caption: str = "first", seed: int = 0) -> None:
        self.spec, self.split, self.name = spec, split, "coco"
        self.root = Path(root).expanduser()
        self.year, self.caption_choice, self.seed = year, caption, seed
        require_dir(self.root, "COCO root", LAYOUT)
        self.instances_file, self.captions_file, self.image_dir = _paths(self.root, split, year)
        if not self.instances_file.is_file():
            raise DataError(f"COCO {split} annotation file {self.instances_file} does not exist", layout_fix(LAYOUT))
        require_dir(self.image_dir, f"COCO {split} image folder", LAYOUT)
        instances = read_instances(self.instances_file)
        self.notes: list[str] = []
        self._check_skipped(instances)

        on_disk = {entry.name: entry for entry in image_files(self.image_dir)}
        missing = [name for _, name, _, _ in instances.images if name not in on_disk]
        if missing:
            message = (f"{len(missing)} of {len(instances.images)} images named in {self.instances_file} are not in "
                       f"{self.image_dir}: {name_list(missing)}")
            if len(missing) > MAX_BAD_FRACTION * len(instances.images):
                raise DataError(f"{message}: above {MAX_BAD_FRACTION:.0%}",
                                f"restore the image folder (re-extract {split}{year}.zip) or use the annotation file of the images you have")
            self._note(f"{message}; left out")
        absent = set(missing)
        kept = [image for image in instances.images if image[1] not in absent]
        self.classes = instances.classes
        self.seg_classes = ["background", *instances.classes]
        self._ids = np.array([image_id for image_id, _, _, _ in kept], dtype=np.int64)
        self._names = pack_paths([name for _, name, _, _ in kept])
        self._sizes = np.array([(width, height) for _, _, width, height in kept], dtype=np.int64).reshape(-1, 2)
        self.labels = np.array([_largest(instances.objects[image_id]) for image_id, _, _, _ in kept], dtype=np.int64)
        self._objects: dict[int, list[CocoObject]] | None = instances.objects
        self._captions: dict[int, list[str]] | None = None
        if not kept:
            raise DataError(f"{self.instances_file}: no image with an object annotation is in {self.image_dir}", layout_fix(LAYOUT))
        parts = ["coco", f"format={FORMAT_VERSION}", f"year={year}", f"split={split}",
                 f"{self.instances_file.name}\t{file_identity(self.instances_file, self.instances_file.stat())}"]
        parts += [f"{name}\t{on_disk[name].identity}" for _, name, _, _ in kept]
        self.fingerprint = hash_parts(parts)
        # The store key also sees renames and swaps (inode, ctime), as the other folder datasets' do.
        self.local_fingerprint = hash_parts([self.fingerprint, "\n".join(on_disk[name].local for _, name, _, _ in kept)])

    def _note(self, message: str) -> None:
        self.notes.append(message)
        warnings.warn(message, DataWarning, stacklevel=3)

    def _check_skipped(self, instances: _Instances) -> None:
        count = sum(instances.skipped.values())
        if instances.without_objects:
            self.notes.append(f"{self.instances_file}: {instances.without_objects} images without a non-crowd object left out (no image-level label)")
        if not count:
            return
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(instances.skipped.items()))
        message = f"{self.instances_file}: {count} of {instances.total} annotations skipped ({reasons}; {'; '.join(instances.examples)})"
        if count > MAX_BAD_FRACTION * instances.total:
            raise DataError(f"{message}: above {MAX_BAD_FRACTION:.0%}", "restore it from the COCO annotations archive (a file of another year or split does not describe these images)")
        self._note(message)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_objects"] = None  # re-read on demand: workers only decode images
        state["_captions"] = None
        return state

    def objects(self, index: int) -> list[CocoObject]:
        """The usable annotations of image ``index`` (crowd regions included), in file order."""
        if self._objects is None:
            self._objects = read_instances(self.instances_file).objects
        return list(self._objects[int(self._ids[self._check_index(index)])])

    def path(self, index: int) -> Path:
        """Absolute path of image ``index``."""
        return self.image_dir / unpack_path(self._names, self._check_index(index))

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.path(index))

    def item_id(self, index: int) -> str:
        """``<split><year>/<file name>``."""
        return f"{self.split}{self.year}/{unpack_path(self._names, self._check_index(index))}"

    def _size(self, index: int) -> tuple[int, int]:
        """(width, height) from the annotations, checked against the file's header."""
        width, height = (int(v) for v in self._sizes[self._check_index(index)])
        path = self.path(index)
        actual = image_size(path)
        if actual != (width, height):
            raise BadImageError(path, f"the image is {actual[0]}x{actual[1]} but {self.instances_file} says {width}x{height}; "
                                      "its annotations do not fit it: restore the image or the annotation file")
        return width, height

    def seg_mask(self, index: int) -> np.ndarray:
        """(H, W) uint8: 0 background, k = ``seg_classes[k]``, 255 crowd regions (see the module docstring)."""
        width, height = self._size(index)
        mask = np.zeros((height, width), dtype=np.uint8)
        objects = self.objects(index)
        for obj in objects:
            if obj.crowd:
                mask[decode_segmentation(obj.segmentation, height, width)] = IGNORE_INDEX
        for obj in sorted((obj for obj in objects if not obj.crowd), key=lambda obj: -obj.area):
            mask[decode_segmentation(obj.segmentation, height, width)] = obj.label + 1
        return mask

    def boxes(self, index: int) -> list[Box]:
        """One box per non-crowd object in file order, ``label`` = its mask value (class index + 1)."""
        self._size(index)
        return [Box(*obj.box, obj.label + 1) for obj in self.objects(index) if not obj.crowd]

    def caption(self, index: int) -> str:
        """The image's first caption in the captions file, or one drawn with ``seed`` (``caption=random``)."""
        if self._captions is None:
            self._captions = self._read_captions()
        image_id = int(self._ids[self._check_index(index)])
        found = self._captions.get(image_id)
        if not found:
            raise DataError(f"{self.captions_file}: image {self.item_id(index)} (id {image_id}) has no non-empty caption",
                            "use the captions file of the same release as the instances file")
        if self.caption_choice == "first":
            return found[0]
        return found[int(np.random.default_rng([self.seed, image_id]).integers(len(found)))]

    def _read_captions(self) -> dict[int, list[str]]:
        document = _read_json(self.captions_file, "captions")
        captions: dict[int, list[str]] = {}
        empty = 0
        for annotation in document["annotations"]:
            text = annotation.get("caption") if isinstance(annotation, dict) else None
            text = text.strip() if isinstance(text, str) else ""
            if not text:
                empty += 1
                continue
            captions.setdefault(annotation.get("image_id"), []).append(text)
        if empty:
            self._note(f"{self.captions_file}: {empty} empty caption(s) skipped")
        return captions
