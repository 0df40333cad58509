"""The shapes world: procedurally generated images with exact labels, masks, boxes and VQA items.

Every image is a deterministic function of ``(seed, split, index)``: it is drawn on demand from its
own random generator ``numpy.random.default_rng([seed, split_id, index])``, so any index can be made
on its own (in any DataLoader worker, in any order) and nothing is stored on disk.

A scene is a textured background (gradient, stripes, checkerboard or smooth noise in muted colours)
with 1-4 flat-coloured shapes of distinct types. The image-level class is the type of the largest
object: the class is chosen first (balanced: every aligned block of 10 indices holds each class once),
that shape is drawn last (on top, fully inside the image) with an area at least twice that of any
other shape, so it is always the largest visible object. The other shapes are placed so that any
single neighbour hides at most about half of them, and may overlap one another (later ones occlude
earlier ones, in the image and in the mask alike, because both are rasterised by the same calls).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .base import BOXES, CAPTIONS, LABELS, MASKS, PREFERENCES, Box, ImageSplit, VQAItem, hash_parts
from .registry import Param, register_dataset

GENERATOR_VERSION = 1
"""Bump when the renderer changes what any (seed, split, index) produces; it enters the fingerprint."""

SHAPE_NAMES = ("circle", "square", "triangle", "star", "hexagon", "cross", "ellipse", "diamond", "ring", "pentagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (40, 170, 60),
    "blue": (35, 80, 225),
    "yellow": (245, 215, 40),
    "orange": (245, 135, 25),
    "purple": (130, 50, 185),
    "cyan": (40, 205, 215),
    "pink": (245, 110, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOUR_NAMES = tuple(COLOURS)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

_COLOUR_JITTER = 12  # per-channel, so a colour is a small cluster, not one exact value
_MAIN_AREA = (0.07, 0.18)  # area of the labelled (largest) shape, as a fraction of the image
_OTHER_AREA = (0.15, 0.5)  # area of every other shape, as a fraction of the labelled shape's area
_RING_INNER = 0.6  # inner radius of a ring / outer radius
_POSITION_MARGIN = 0.12  # position questions need the centroid this far (x image size) from the midline
_PLACEMENT_TRIES = 20


def _regular(n: int, start: float = -math.pi / 2) -> np.ndarray:
    angles = start + 2 * math.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -math.pi / 2 + math.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross(half_width: float = 0.3) -> np.ndarray:
    w = half_width
    return np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)], dtype=float)


def _ellipse(aspect: float = 0.55, points: int = 48) -> np.ndarray:
    angles = 2 * math.pi * np.arange(points) / points
    return np.stack([np.cos(angles), aspect * np.sin(angles)], axis=1)


# Unit outlines (circumradius about 1, centred on 0). Circle and ring are drawn with PIL's ellipse.
_OUTLINES: dict[str, np.ndarray] = {
    "square": _regular(4, math.pi / 4),
    "triangle": _regular(3),
    "star": _star(),
    "hexagon": _regular(6),
    "cross": _cross(),
    "ellipse": _ellipse(),
    "diamond": np.array([(0, -1), (0.55, 0), (0, 1), (-0.55, 0)], dtype=float),
    "pentagon": _regular(5),
}


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


_UNIT_AREA = {name: _polygon_area(points) for name, points in _OUTLINES.items()}
_UNIT_AREA["circle"] = math.pi
_UNIT_AREA["ring"] = math.pi * (1 - _RING_INNER**2)
_UNIT_EXTENT = {name: float(np.max(np.hypot(points[:, 0], points[:, 1]))) for name, points in _OUTLINES.items()}
_UNIT_EXTENT["circle"] = _UNIT_EXTENT["ring"] = 1.0


@dataclass(frozen=True)
class ShapeObject:
    """One drawn shape: its class (index into ``SHAPE_NAMES``), colour, geometry (pixels, radians),
    and, once rendered, its visible pixel count and box (``None`` when fully hidden)."""

    shape: int
    colour: str
    rgb: tuple[int, int, int]
    cx: float
    cy: float
    radius: float
    angle: float
    visible_pixels: int = 0
    box: Box | None = None

    @property
    def shape_name(self) -> str:
        return SHAPE_NAMES[self.shape]

    @property
    def extent(self) -> float:
        """Radius of the circle that encloses the shape, in pixels."""
        return self.radius * _UNIT_EXTENT[self.shape_name]


def _sample_scene(rng: np.random.Generator, label: int, size: int) -> list[ShapeObject]:
    """Shapes in drawing order (the labelled one last), not yet rendered."""
    n_objects = int(rng.integers(1, 5))
    others = rng.permutation([k for k in range(len(SHAPE_NAMES)) if k != label])[: n_objects - 1]
    main_area = rng.uniform(*_MAIN_AREA) * size * size
    specs = [(label, main_area)] + [(int(k), rng.uniform(*_OTHER_AREA) * main_area) for k in others]

    placed: list[ShapeObject] = []
    for shape, area in specs:
        name = SHAPE_NAMES[shape]
        radius = math.sqrt(area / _UNIT_AREA[name])
        extent = radius * _UNIT_EXTENT[name]
        colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
        rgb = tuple(int(c) for c in np.clip(np.array(COLOURS[colour]) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, 3), 0, 255))
        angle = float(rng.uniform(0, 2 * math.pi))
        for _ in range(_PLACEMENT_TRIES):
            cx, cy = rng.uniform(extent, size - extent, 2)
            # The centre stays outside every other shape's enclosing circle (and vice versa), so one
            # neighbour can cover at most about half of a shape.
            if all(math.hypot(cx - o.cx, cy - o.cy) >= max(extent, o.extent) for o in placed):
                placed.append(ShapeObject(shape, colour, rgb, float(cx), float(cy), radius, angle))  # type: ignore[arg-type]
                break
        # A shape that finds no room is left out: the scene then has fewer shapes.
    main, rest = placed[0], placed[1:]
    return rest + [main]


def _draw(draw: ImageDraw.ImageDraw, obj: ShapeObject, fill: Any) -> None:
    name = obj.shape_name
    if name in ("circle", "ring"):
        r = obj.radius
        bbox = (obj.cx - r, obj.cy - r, obj.cx + r, obj.cy + r)
        if name == "circle":
            draw.ellipse(bbox, fill=fill)
        else:
            draw.ellipse(bbox, outline=fill, width=max(1, round(r * (1 - _RING_INNER))))
        return
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    pts = _OUTLINES[name] @ np.array([[c, s], [-s, c]]) * obj.radius + (obj.cx, obj.cy)
    draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)


@lru_cache(maxsize=8)
def _grain(size: int) -> np.ndarray:
    """A fixed (2 size, 2 size) float32 field of N(0, 1) noise; images take random windows of it."""
    return np.random.default_rng(12345).standard_normal((2 * size, 2 * size), dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """RGB (size x size) texture blending two muted colours, plus fine grain."""
    grey = rng.uniform(70, 190, (2, 1))
    colours = 0.65 * grey + 0.35 * rng.uniform(0, 255, (2, 3))
    kind = int(rng.integers(4))
    theta = rng.uniform(0, 2 * math.pi)
    coords = np.arange(size, dtype=np.float32)
    if kind == 3:  # smooth noise: a coarse random field, bilinearly upsampled
        cells = int(rng.integers(3, 8))
        coarse = rng.integers(0, 256, (cells, cells), dtype=np.uint8)
        mix = np.asarray(Image.fromarray(coarse, "L").resize((size, size), Image.BILINEAR), dtype=np.float32)
    else:
        u = coords[None, :] * np.float32(math.cos(theta)) + coords[:, None] * np.float32(math.sin(theta))
        if kind == 0:  # linear gradient
            mix = (u - u.min()) * np.float32(255.0 / max(float(u.max() - u.min()), 1e-6))
        elif kind == 1:  # soft stripes
            period = rng.uniform(0.04, 0.2) * size
            mix = np.float32(127.5) + np.float32(127.5) * np.sin(u * np.float32(2 * math.pi / period))
        else:  # checkerboard, possibly rotated
            scale = np.float32(1.0 / rng.uniform(0.06, 0.2) / size)
            v = coords[:, None] * np.float32(math.cos(theta)) - coords[None, :] * np.float32(math.sin(theta))
            offset = np.float32(2 * size)  # keeps the cell indices positive, so truncation is floor
            cells = ((u + offset) * scale).astype(np.int32) ^ ((v + offset) * scale).astype(np.int32)
            mix = (cells & 1).astype(np.float32) * np.float32(255.0)
    oy, ox = rng.integers(0, size, 2)
    mix = mix + _grain(size)[oy : oy + size, ox : ox + size] * np.float32(12.0)
    # Blend through a 256-entry palette: PIL expands it to RGB far faster than numpy maths or gathers.
    ramp = np.linspace(0.0, 1.0, 256)[:, None]
    palette = np.rint(colours[0] + ramp * (colours[1] - colours[0])).astype(np.uint8)
    image = Image.fromarray(np.clip(mix, 0, 255).astype(np.uint8), "P")
    image.putpalette(palette.tobytes())
    return image.convert("RGB")


@dataclass(frozen=True)
class _Rendered:
    index: int
    image: Image.Image  # RGB, never handed out (load_image returns a copy)
    instances: np.ndarray  # (H, W) uint8, 0 = background, k = objects[k - 1]
    objects: tuple[ShapeObject, ...]  # drawing order, with visibility filled in


@register_dataset("shapes")
class ShapesSplit(ImageSplit):
    """One split of the shapes world (see the module docstring and docs/datasets.md)."""

    PARAMS = {
        "n": Param(int, 2000, "number of train images", min=1),
        "n_val": Param(int, None, "number of val images (default max(1, n // 4))", min=1),
        "n_test": Param(int, None, "number of test images (default max(1, n // 4))", min=1),
        "seed": Param(int, 0, "generator seed", min=0),
        "size": Param(int, 224, "image side in pixels", min=32),
    }
    SPLITS = ("train", "val", "test")
    CAPABILITIES = frozenset({LABELS, MASKS, BOXES, CAPTIONS, PREFERENCES})

    def __init__(self, spec: str, split: str, n: int, n_val: int | None, n_test: int | None, seed: int, size: int) -> None:
        self.spec, self.split, self.name = spec, split, "shapes"
        self.seed, self.size = seed, size
        self.split_id = SPLIT_IDS[split]
        length = {"train": n, "val": n_val or max(1, n // 4), "test": n_test or max(1, n // 4)}[split]
        self.classes = list(SHAPE_NAMES)
        self.seg_classes = ["background", *SHAPE_NAMES]
        self.labels = self._balanced_labels(length)
        self.fingerprint = hash_parts(
            ["shapes", f"version={GENERATOR_VERSION}", f"split={split}", f"seed={seed}", f"size={size}", f"n={length}"]
        )
        self._last: _Rendered | None = None

    def _balanced_labels(self, length: int) -> np.ndarray:
        # Each aligned block of 10 indices holds every class once, in an order drawn per block, so
        # any prefix is near-balanced and label i never depends on the split's length.
        k = len(SHAPE_NAMES)
        blocks = [np.random.default_rng([self.seed, self.split_id, b, 2]).permutation(k) for b in range(-(-length // k))]
        return np.concatenate(blocks)[:length].astype(np.int64) if blocks else np.zeros(0, np.int64)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_last"] = None  # a render cache is not worth shipping to workers
        return state

    def _render(self, index: int) -> _Rendered:
        index = self._check_index(index)
        last = self._last
        if last is not None and last.index == index:
            return last
        rng = np.random.default_rng([self.seed, self.split_id, index])
        objects = _sample_scene(rng, int(self.labels[index]), self.size)
        image = _background(rng, self.size)
        instances = Image.new("L", (self.size, self.size), 0)
        draw_image, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(instances)
        for k, obj in enumerate(objects, start=1):
            _draw(draw_image, obj, obj.rgb)
            _draw(draw_mask, obj, k)
        inst = np.asarray(instances)
        counts = np.bincount(inst.ravel(), minlength=len(objects) + 1)
        finished = []
        for k, obj in enumerate(objects, start=1):
            box = None
            if counts[k]:
                rows = np.flatnonzero((inst == k).any(axis=1))
                cols = np.flatnonzero((inst == k).any(axis=0))
                box = Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1, obj.shape + 1)
            finished.append(
                ShapeObject(obj.shape, obj.colour, obj.rgb, obj.cx, obj.cy, obj.radius, obj.angle, int(counts[k]), box)
            )
        rendered = _Rendered(index, image, inst, tuple(finished))
        self._last = rendered
        return rendered

    def load_image(self, index: int) -> Image.Image:
        """Image ``index``: RGB uint8, ``size`` x ``size`` pixels."""
        return self._render(index).image.copy()

    def seg_mask(self, index: int) -> np.ndarray:
        """(size, size) uint8: 0 background, k = ``seg_classes[k]`` (shape type + 1), occlusion as drawn."""
        rendered = self._render(index)
        lut = np.zeros(256, np.uint8)
        for k, obj in enumerate(rendered.objects, start=1):
            lut[k] = obj.shape + 1
        return lut[rendered.instances]

    def objects(self, index: int) -> list[ShapeObject]:
        """The visible shapes of image ``index`` in drawing order (the labelled one last)."""
        return [obj for obj in self._render(index).objects if obj.visible_pixels > 0]

    def instance_mask(self, index: int) -> np.ndarray:
        """(size, size) uint8: 0 background, k = the k-th drawn shape (of all drawn, hidden ones included)."""
        return self._render(index).instances.copy()

    def boxes(self, index: int) -> list[Box]:
        """One box per visible shape (its visible extent), label = shape type + 1, drawing order."""
        return [obj.box for obj in self.objects(index) if obj.box is not None]

    def vqa_items(self, index: int) -> list[VQAItem]:
        """At least four questions about image ``index`` (colour, count, presence, and position when
        some shape sits clearly off the midline), with the correct answer and a plausible wrong one."""
        index = self._check_index(index)
        objects = self.objects(index)
        rng = np.random.default_rng([self.seed, self.split_id, index, 1])
        items: list[VQAItem] = []

        def other_colour(colour: str) -> str:
            return str(rng.choice([c for c in COLOUR_NAMES if c != colour]))

        def off_by_one(n: int) -> str:
            return str(n + 1 if n == 0 or rng.random() < 0.5 else n - 1)

        main = objects[-1]
        items.append(VQAItem(f"What colour is the {main.shape_name}?", main.colour, other_colour(main.colour), "colour", main.box))
        items.append(VQAItem("How many shapes are there?", str(len(objects)), off_by_one(len(objects)), "count"))

        colour = objects[int(rng.integers(len(objects)))].colour if rng.random() < 0.75 else str(rng.choice(COLOUR_NAMES))
        n_colour = sum(obj.colour == colour for obj in objects)
        items.append(VQAItem(f"How many {colour} shapes are there?", str(n_colour), off_by_one(n_colour), "count"))

        present = {obj.shape for obj in objects}
        if rng.random() < 0.5:
            obj = objects[int(rng.integers(len(objects)))]
            items.append(VQAItem(f"Is there a {obj.shape_name} in the image?", "yes", "no", "presence", obj.box))
        else:
            absent = [k for k in range(len(SHAPE_NAMES)) if k not in present]
            name = SHAPE_NAMES[int(rng.choice(absent))]
            items.append(VQAItem(f"Is there a {name} in the image?", "no", "yes", "presence", None))

        inst = self._render(index).instances
        candidates = []
        for k, obj in enumerate(self._render(index).objects, start=1):
            if obj.visible_pixels == 0:
                continue
            ys, xs = np.nonzero(inst == k)
            dx, dy = float(xs.mean()) + 0.5 - self.size / 2, float(ys.mean()) + 0.5 - self.size / 2
            if max(abs(dx), abs(dy)) >= _POSITION_MARGIN * self.size:
                candidates.append((obj, dx, dy))
        if candidates:
            obj, dx, dy = candidates[int(rng.integers(len(candidates)))]
            if abs(dx) >= abs(dy):
                answer, wrong = ("left", "right") if dx < 0 else ("right", "left")
                question = f"Is the {obj.shape_name} in the left or right half of the image?"
            else:
                answer, wrong = ("top", "bottom") if dy < 0 else ("bottom", "top")
                question = f"Is the {obj.shape_name} in the top or bottom half of the image?"
            items.append(VQAItem(question, answer, wrong, "position", obj.box))

        if len(objects) > 1:
            obj = objects[int(rng.integers(len(objects) - 1))]
            items.append(VQAItem(f"What colour is the {obj.shape_name}?", obj.colour, other_colour(obj.colour), "colour", obj.box))
        return items

    def caption(self, index: int) -> str:
        """A one-sentence description of image ``index``: the labelled (largest) shape first, then the
        other visible shapes in drawing order, e.g. ``"a large red circle with a blue star and a green ring"``."""
        objects = self.objects(index)
        main, others = objects[-1], objects[:-1]
        text = f"a large {main.colour} {main.shape_name}"
        if others:
            parts = [f"{'an' if obj.colour[0] in 'aeiou' else 'a'} {obj.colour} {obj.shape_name}" for obj in others]
            text += " with " + (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1])
        return text

    def item_id(self, index: int) -> str:
        return f"{self.split}/{self._check_index(index):07d}"
