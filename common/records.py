"""The one reader of image records in JSON Lines, with the record rules and the accounting of what was
skipped, shared by ``train/`` (its training files) and ``benchmarks/`` (the ``prefs`` and ``pairs``
dataset kinds, which add parquet tables and regions on top).

A line is one JSON object with an ``image``: a path relative to the file (or absolute), written as a
string or as ``{"path": ...}``. Blank lines are ignored. Two kinds of record:

- a preference item (MMPR / RLAIF-V): ``question``, ``chosen`` and ``rejected``, each non-empty text
  (after stripping white space), and ``chosen`` different from ``rejected`` (:func:`preference`);
- a caption: a non-empty text ``caption`` (:func:`caption`).

A record that cannot be used is skipped and counted by reason in a :class:`Skips`, the first few named
by line; :meth:`Skips.check` refuses the file (a :class:`~common.errors.DataError` naming it) when
nothing is usable or more than ``MAX_BAD_FRACTION`` of it was skipped. Images are the caller's to check
(``train`` decodes each one, the datasets look for the file), as are the caller's own rules.

Imports nothing of this project.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .errors import DataError

MAX_BAD_FRACTION = 0.05
"""Above this fraction of skipped records a file is refused."""
PREFERENCE_FIELDS = ("question", "chosen", "rejected")


@dataclass(frozen=True)
class Record:
    """One line (or parquet row): its 1-based ``number``, every field but the image, and the image's path
    as written ('' when the image is embedded: its (row group, row) in a parquet file)."""

    number: int
    fields: dict[str, Any]
    image: str = ""
    embedded: tuple[int, int] | None = None
    unit: str = "line"

    @property
    def where(self) -> str:
        return f"{self.unit} {self.number}"


@dataclass
class Skips:
    """The records of one file: how many were read (``total``), and those skipped by reason
    (``skipped``), the first few named (``examples``: ``line 4: empty caption``)."""

    file: Path
    total: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}")

    @property
    def count(self) -> int:
        """Records skipped."""
        return sum(self.skipped.values())

    @property
    def kept(self) -> int:
        return self.total - self.count

    def summary(self) -> str:
        """``FILE: 3 of 120 records skipped (2 missing image, 1 empty caption; line 4: empty caption, ...)``,
        or ``FILE: 120 records, none skipped``."""
        if not self.count:
            return f"{self.file}: {self.total} records, none skipped"
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"{self.file}: {self.count} of {self.total} records skipped ({reasons}; {'; '.join(self.examples)})"

    def check(self, fix: str, max_fraction: float = MAX_BAD_FRACTION) -> str:
        """DataError (with ``fix``) when the file has no record, no usable one, or more than
        ``max_fraction`` skipped; else the note to keep ('' when nothing was skipped)."""
        if not self.total:
            raise DataError(f"{self.file}: no records (the file is empty)", fix)
        if self.count >= self.total:
            raise DataError(f"{self.summary()}: no usable record", fix)
        if self.count > max_fraction * self.total:
            raise DataError(f"{self.summary()}: above {max_fraction:.0%} of the file", fix)
        return self.summary() if self.count else ""


def read_jsonl(path: Path, skips: Skips) -> list[Record]:
    """Every record of the JSONL file at ``path`` that is a JSON object with an image path, in file
    order; the others are counted in ``skips``. DataError naming the file when it is missing, not a
    file, or not UTF-8 text (a binary file)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} {'is a directory' if path.is_dir() else 'does not exist'}", "pass a .jsonl file (one JSON object per line)")
    records = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, 1):
                if not text.strip():
                    continue
                skips.total += 1
                record = _record(number, text, skips)
                if record is not None:
                    records.append(record)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}): a binary file?", "a .jsonl file holds one JSON object per line") from None
    return records


def _record(number: int, text: str, skips: Skips) -> Record | None:
    where = f"line {number}"
    try:
        fields = json.loads(text)
    except json.JSONDecodeError:
        skips.skip(where, "not JSON")
        return None
    if not isinstance(fields, dict):
        skips.skip(where, "not a JSON object")
        return None
    image = fields.pop("image", None)
    if isinstance(image, dict) and image.get("bytes") is None:
        image = image.get("path")
    if not isinstance(image, str) or not image.strip():
        skips.skip(where, "no image path (a JSONL image is a path relative to the file)")
        return None
    return Record(number, fields, image=image.strip())


class Preference(NamedTuple):
    question: str
    chosen: str
    rejected: str


class Caption(NamedTuple):
    text: str


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) else None


def preference(fields: dict[str, Any]) -> Preference | str:
    """The record's (question, chosen, rejected), stripped, or why it is not a usable preference item."""
    if not set(PREFERENCE_FIELDS) <= set(fields):
        return "not a preference item (needs question, chosen, rejected)"
    question, chosen, rejected = (_text(fields[key]) for key in PREFERENCE_FIELDS)
    if question is None or chosen is None or rejected is None:
        return "question, chosen and rejected must be text"
    if not question:
        return "empty question"
    if not chosen or not rejected:
        return "empty answer"
    if chosen == rejected:
        return "chosen equals rejected"
    return Preference(question, chosen, rejected)


def caption(fields: dict[str, Any]) -> Caption | str:
    """The record's caption, stripped, or why there is no usable one."""
    if "caption" not in fields:
        return "no caption field"
    text = _text(fields["caption"])
    if text is None:
        return "caption must be text"
    return Caption(text) if text else "empty caption"
