"""scikit-learn's bundled handwritten digits (1797 images, 8x8, 16 grey levels), offline.

Images are scaled from 0..16 to 0..255, upscaled with nearest-neighbour to ``size`` pixels and
repeated to RGB. The split is a stratified 60/20/20 train/val/test partition drawn with ``seed``.
Classes are '0'..'9'; there are no masks, boxes or VQA items.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from PIL import Image

from .base import LABELS, ImageSplit, hash_parts
from .registry import Param, register_dataset

_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as (uint8 pixels 0..255 of shape (1797, 8, 8), int64 targets); read once per process."""
    from sklearn.datasets import load_digits  # deferred: importing scikit-learn costs about a second

    data = load_digits()
    pixels = np.clip(np.rint(data.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return pixels, data.target.astype(np.int64)


def _stratified_split(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Indices of each split: within each class, a seeded shuffle cut 60/20/20 (sorted per split)."""
    rng = np.random.default_rng([seed, 7])
    parts: dict[str, list[np.ndarray]] = {name: [] for name in _FRACTIONS}
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_train = int(round(len(members) * _FRACTIONS["train"]))
        n_val = int(round(len(members) * _FRACTIONS["val"]))
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train : n_train + n_val])
        parts["test"].append(members[n_train + n_val :])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


@register_dataset("digits")
class DigitsSplit(ImageSplit):
    """One split of scikit-learn's digits, as RGB images of ``size`` pixels."""

    PARAMS = {
        "size": Param(int, 32, "image side in pixels (nearest-neighbour upscaling of 8x8)", min=8),
        "seed": Param(int, 0, "seed of the stratified split", min=0),
    }
    SPLITS = ("train", "val", "test")
    CAPABILITIES = frozenset({LABELS})

    def __init__(self, spec: str, split: str, size: int, seed: int) -> None:
        self.spec, self.split, self.name = spec, split, "digits"
        self.size = size
        pixels, targets = _load()
        self._indices = _stratified_split(targets, seed)[split]
        self._pixels = pixels[self._indices]
        self.labels = targets[self._indices]
        self.classes = [str(d) for d in range(10)]
        self.seg_classes = []
        data_hash = hashlib.sha256(pixels.tobytes() + targets.tobytes()).hexdigest()[:16]
        self.fingerprint = hash_parts(["digits", f"data={data_hash}", f"split={split}", f"seed={seed}", f"size={size}"])

    def load_image(self, index: int) -> Image.Image:
        """Digit ``index`` as RGB uint8, ``size`` x ``size`` pixels (white strokes on black)."""
        img = Image.fromarray(self._pixels[self._check_index(index)], "L")
        return img.resize((self.size, self.size), Image.NEAREST).convert("RGB")

    def item_id(self, index: int) -> str:
        """Index into ``sklearn.datasets.load_digits()``."""
        return f"digits/{int(self._indices[self._check_index(index)]):04d}"
