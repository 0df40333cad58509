"""Datasets as splits addressed by index: ``open_split("shapes:n=2000", "train")``.

Specs are ``kind[:key=value...]``; the kinds shipped here are ``shapes`` (generated), ``digits``
(scikit-learn's bundled 8x8 digits), ``imagenet:root=...``, ``ade20k:root=...``, ``coco:root=...``,
``pairs:file=...`` (image-caption pairs) and ``prefs:file=...`` (preference items). See
docs/datasets.md for each kind's classes, masks, boxes, VQA items, splits and fingerprint.

A package of its own, below ``train`` and ``benchmarks`` (both read it) and importing only ``common``.
Not named ``datasets``: that would shadow Hugging Face's ``datasets``, which lmms-eval imports.
"""
from __future__ import annotations

from .base import (
    BOXES,
    CAPABILITIES,
    CAPTIONS,
    IGNORE_INDEX,
    IMAGE_FILES,
    LABELS,
    MASKS,
    PREFERENCES,
    VQA_KINDS,
    BadImageError,
    Box,
    ImageSplit,
    VQAItem,
    open_rgb,
    to_rgb,
)
from .registry import (
    Param,
    available_splits,
    dataset_capabilities,
    dataset_kinds,
    get_kind,
    kinds_with,
    open_split,
    parse_spec,
    register_dataset,
    resolve_params,
)

# Importing the kinds registers them.
from . import ade20k, coco, digits, imagenet, pairs, prefs, shapes  # noqa: E402,F401  isort: skip

__all__ = [
    "BOXES",
    "CAPABILITIES",
    "CAPTIONS",
    "IMAGE_FILES",
    "LABELS",
    "MASKS",
    "PREFERENCES",
    "dataset_capabilities",
    "kinds_with",
    "IGNORE_INDEX",
    "VQA_KINDS",
    "BadImageError",
    "Box",
    "ImageSplit",
    "Param",
    "VQAItem",
    "available_splits",
    "dataset_kinds",
    "get_kind",
    "open_rgb",
    "open_split",
    "parse_spec",
    "register_dataset",
    "resolve_params",
    "to_rgb",
]
