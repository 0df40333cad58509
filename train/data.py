"""Training data: preference JSONL (MMPR / RLAIF-V layout) and caption JSONL, validated, and writers that
turn the shapes world into both.

Preference lines: ``{"image": "images/0001.png", "question": ..., "chosen": ..., "rejected": ...}``;
caption lines: ``{"image": ..., "caption": ...}`` (trained as the answer to :data:`CAPTION_PROMPT`).
Image paths are relative to the JSONL file. The lines are read by the project's one record reader
(``common.records``: its rules for preference items and captions, and its skip accounting, shared with
the ``prefs`` and ``pairs`` datasets of ``benchmarks``). Items with a missing or unreadable image, an
empty question or answer, ``chosen == rejected`` or a sequence longer than the maximum length are skipped
and counted; above ``max_bad_fraction`` of the file the read stops with a ``DataError`` naming the file.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from common.errors import DataError  # a training file that cannot be used: names the file and the fix
from common.records import MAX_BAD_FRACTION, PREFERENCE_FIELDS, Skips, caption, preference, read_jsonl
from imagesets.base import decode_strictly

CAPTION_PROMPT = "Describe the image."
DEFAULT_MAX_BAD_FRACTION = MAX_BAD_FRACTION
FIX = "each line is a JSON object with image + caption, or image + question + chosen + rejected; fix the file or raise --max-bad-fraction"

__all__ = ["CAPTION_PROMPT", "DataError", "ItemDataset", "TrainItem", "read_items", "write_shapes_data"]


@dataclass(frozen=True)
class TrainItem:
    """One training item: an image file, a question and its chosen answer (and, for preferences, a
    rejected one; empty for captions). ``line`` is the 1-based line of the source file."""

    image: str
    question: str
    chosen: str
    rejected: str = ""
    line: int = 0


def _image_ok(path: Path, cache: dict[Path, str]) -> str:
    """'' if the image opens and decodes, else the reason."""
    if path not in cache:
        if not path.exists():
            cache[path] = "missing image"
        else:
            try:
                with Image.open(path) as img:
                    decode_strictly(img)
                cache[path] = ""
            except Exception:  # PIL raises many types for broken files
                cache[path] = "unreadable image"
    return cache[path]


def _texts(fields: dict) -> tuple[str, str, str] | str:
    """(question, chosen, rejected) of a caption line (the caption is the chosen answer to
    :data:`CAPTION_PROMPT`, no rejected one) or of a preference line, or why the line is neither."""
    if "caption" in fields:
        found = caption(fields)
        return found if isinstance(found, str) else (CAPTION_PROMPT, found.text, "")
    if set(PREFERENCE_FIELDS) & set(fields):
        found = preference(fields)
        return found if isinstance(found, str) else tuple(found)
    return "neither a caption nor a preference item (needs caption, or question + chosen + rejected)"


def read_items(
    path: str | os.PathLike, *, length_of: Callable[[str, str], int] | None = None, max_length: int = 2048,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> tuple[list[TrainItem], Skips]:
    """Read a preference or caption JSONL file (the kind is told by each line's keys); returns the items
    and what was skipped (``Skips``: ``summary()``, ``skipped`` reason -> count).

    ``length_of(question, answer)`` gives a sequence's token count (visual tokens included); items whose
    longer answer makes it exceed ``max_length`` are skipped as ``over max length``.
    """
    path = Path(path)
    skips = Skips(path)
    items: list[TrainItem] = []
    images: dict[Path, str] = {}
    for record in read_jsonl(path, skips):
        texts = _texts(record.fields)
        image = Path(record.image)
        image = image if image.is_absolute() else path.parent / image
        problem = texts if isinstance(texts, str) else _image_ok(image, images)
        if not problem:
            question, chosen, rejected = texts
            if length_of is not None and max(length_of(question, chosen), length_of(question, rejected or chosen)) > max_length:
                problem = "over max length"
        if problem:
            skips.skip(record.where, problem)
            continue
        items.append(TrainItem(str(image), question, chosen, rejected, record.number))
    skips.check(FIX, max_bad_fraction)
    return items, skips


class ItemDataset(Dataset):
    """Items with their images loaded and transformed: ``(index, image tensor)``; the text stays in
    :attr:`items` (the training loop tokenises it).

    The transform is deterministic (no augmentation), so each image file is decoded once and its tensor
    kept, up to ``cache_bytes`` in all (the shapes world's few hundred 64 px images: ~10 MB; a real
    dataset fills the budget and the rest is decoded on every visit, as without a cache). Items that
    ask several questions about one image share its tensor.
    """

    def __init__(self, items: list[TrainItem], transform: Callable[[Image.Image], torch.Tensor], cache_bytes: int = 512 * 2**20) -> None:
        self.items, self.transform = items, transform
        self.cache_bytes = cache_bytes
        self._cache: dict[str, torch.Tensor] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        path = self.items[index].image
        tensor = self._cache.get(path)
        if tensor is None:
            with Image.open(path) as img:
                tensor = self.transform(img.convert("RGB"))
            size = tensor.numel() * tensor.element_size()
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[path] = tensor
                self._cached_bytes += size
        return index, tensor


def write_shapes_data(spec: str, split: str, out: str | os.PathLike, *, limit: int | None = None) -> dict[str, Path]:
    """Write the shapes world's ``split`` as training files under ``out``: ``images/*.png``,
    ``captions.jsonl`` (one caption per image) and ``preferences.jsonl`` (every VQA item: question,
    chosen, rejected). Returns the two file paths."""
    from imagesets import CAPTIONS, PREFERENCES, open_split

    from .config import check_out_folder

    out = Path(out)
    check_out_folder(out)
    try:
        data = open_split(spec, split)  # a bad spec or split is refused before anything is written
    except ValueError as err:
        raise DataError(f"--data {spec} --split {split}: {err}") from None
    if not {CAPTIONS, PREFERENCES} <= data.CAPABILITIES:
        raise DataError(f"--data {spec}: {data.name} has no captions or VQA items to write; pass a shapes spec such as shapes:n=500:seed=1")
    (out / "images").mkdir(parents=True, exist_ok=True)
    count = len(data) if limit is None else min(limit, len(data))
    captions, preferences = [], []
    for index in range(count):
        name = f"images/{split}-{index:06d}.png"
        data.load_image(index).save(out / name)
        captions.append(json.dumps({"image": name, "caption": data.caption(index)}))
        for item in data.vqa_items(index):
            preferences.append(json.dumps({"image": name, "question": item.question, "chosen": item.chosen, "rejected": item.rejected, "kind": item.kind}))
    paths = {"captions": out / "captions.jsonl", "preferences": out / "preferences.jsonl"}
    paths["captions"].write_text("\n".join(captions) + "\n")
    paths["preferences"].write_text("\n".join(preferences) + "\n")
    return paths
