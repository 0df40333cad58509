"""Image-caption pairs for the ``align`` suite: ``pairs:file=F``, a JSONL or parquet table with ``image``
and ``caption`` per record (``imagesets.records``: image paths relative to the file, or the image
bytes of a Hugging Face parquet export). ``train/``'s caption JSONL (``{"image", "caption"}``) is one.

Every kept record is one item of the ``val`` split (the file is the split; the suites read their
alignment set from ``val``), in file order. A record without a caption, with an empty one (after
stripping white space; the rule of ``common.records.caption``), or whose image file is missing is
skipped and counted (the first few named by line); above 5% of the file the dataset is refused with a
``DataError`` naming the file, as is a parquet file without a ``caption`` column. There are no labels,
masks or boxes.
"""
from __future__ import annotations

from typing import Any

from common.records import caption

from .base import CAPTIONS, IMAGE_FILES
from .records import RecordSplit, files_capability
from .registry import Param, register_dataset

FIX = "each record needs an image (a path relative to the file, or image bytes in parquet) and a non-empty caption"


@register_dataset("pairs")
class PairsSplit(RecordSplit):
    """The image-caption pairs of one table (see the module docstring)."""

    PARAMS = {"file": Param(str, help="a .jsonl or .parquet file of records with image and caption")}
    SPLITS = ("val",)
    CAPABILITIES = frozenset({CAPTIONS, IMAGE_FILES})

    @classmethod
    def capabilities(cls, **params: Any) -> frozenset[str]:
        """Captions; image files too when every image is a path (JSONL, or a parquet column of strings)."""
        return frozenset({CAPTIONS, IMAGE_FILES} if files_capability(params["file"]) else {CAPTIONS})

    def __init__(self, spec: str, split: str, file: str) -> None:
        self.spec, self.split, self.name = spec, split, "pairs"
        self.classes, self.seg_classes = [], []
        records, skips = self._read(file)
        self._require_columns(("caption",), "name the caption column caption (one caption per image)")
        kept, self._captions = [], []
        for record in records:
            found = caption(record.fields)
            problem = found if isinstance(found, str) else self._image_problem(record)
            if problem:
                skips.skip(record.where, problem)
                continue
            kept.append(record)
            self._captions.append(found.text)
        self._keep(kept, skips, FIX, [])

    def caption(self, index: int) -> str:
        """The record's caption, stripped of surrounding white space."""
        return self._captions[self._check_index(index)]
