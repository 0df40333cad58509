"""Tables of image records, the common ground of the ``pairs`` and ``prefs`` kinds: a JSONL file (one
JSON object per line) or a parquet file (one record per row), each record with an ``image``.

``image`` is a path relative to the table file (or absolute): a string, or ``{"path": ...}``. In a
parquet file it may also be the image's bytes, as the parquet exports of Hugging Face datasets store
an ``Image`` feature: a binary column, or a struct ``{bytes, path}`` (the bytes when present, else the
path). A record that cannot be used is skipped and counted by reason, the first few named by line (JSONL)
or row (parquet); above ``MAX_BAD_FRACTION`` of the table the read stops with an error naming the file.
Embedded images are read from their parquet row group when asked for (the last group read is kept), so
a split holds only offsets and pickles cheaply into DataLoader workers.
"""
from __future__ import annotations

import io
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .base import BadImageError, ImageSplit, hash_parts, open_rgb
from .files import file_identity, local_identity, pack_paths, unpack_path

MAX_BAD_FRACTION = 0.05
"""Above this fraction of skipped records a table is refused (as ``train.data`` does for training files)."""
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
IMAGE_FORMAT = (
    "image: a path relative to the file (or absolute), or, in parquet, the image bytes (a binary column or a "
    "{bytes, path} struct as in Hugging Face parquet exports)"
)


class DataWarning(UserWarning):
    """Items of a dataset file that were skipped (counted and named), below the error threshold."""


def table_format(path: Path) -> str:
    """``jsonl`` or ``parquet`` by the file's suffix; ValueError naming the file and the suffixes read."""
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise ValueError(f"{path}: unknown table format {path.suffix or '(no suffix)'}; name it .jsonl (one JSON object per line) or .parquet")
    return found


@dataclass
class Skips:
    """Records of one table that were skipped, by reason, with the first few named."""

    file: Path
    total: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}")

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """``FILE: 3 of 120 records skipped (2 missing image, 1 empty caption; line 4: empty caption, ...)``."""
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
        return f"{self.file}: {self.count} of {self.total} records skipped ({reasons}; {'; '.join(self.examples)})"

    def check(self, fix: str) -> list[str]:
        """ValueError when more than ``MAX_BAD_FRACTION`` of the records were skipped (or none is left);
        else the notes to keep (empty when nothing was skipped), also issued as a ``DataWarning``."""
        if self.total and self.count >= self.total:
            raise ValueError(f"{self.summary()}: no usable record; {fix}")
        if self.count > MAX_BAD_FRACTION * self.total:
            raise ValueError(f"{self.summary()}: above {MAX_BAD_FRACTION:.0%} of the file; {fix}")
        if not self.count:
            return []
        note = self.summary()
        warnings.warn(note, DataWarning, stacklevel=3)
        return [note]


@dataclass(frozen=True)
class Record:
    """One line / row: its 1-based ``number``, every field but the image, the image's path as written
    ('' when embedded) or its (row group, row) in the parquet file."""

    number: int
    fields: dict[str, Any]
    image: str = ""
    embedded: tuple[int, int] | None = None
    unit: str = "line"

    @property
    def where(self) -> str:
        return f"{self.unit} {self.number}"


def _jsonl_records(path: Path, skips: Skips) -> list[Record]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            skips.total += 1
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                skips.skip(f"line {number}", "not JSON")
                continue
            if not isinstance(record, dict):
                skips.skip(f"line {number}", "not a JSON object")
                continue
            image = record.pop("image", None)
            if isinstance(image, dict) and image.get("bytes") is None:
                image = image.get("path")
            if not isinstance(image, str) or not image.strip():
                skips.skip(f"line {number}", "no image path (JSONL images are paths; embed bytes in parquet)")
                continue
            records.append(Record(number, record, image=image.strip()))
    return records


def _parquet_image_kind(path: Path, schema) -> str:
    """``path``, ``bytes`` or ``struct`` for the ``image`` column's arrow type; ValueError otherwise."""
    import pyarrow as pa

    if "image" not in schema.names:
        raise ValueError(
            f"{path}: parquet file has no 'image' column (columns: {', '.join(schema.names) or 'none'}); "
            f"name the image column image ({IMAGE_FORMAT})"
        )
    kind = schema.field("image").type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "path"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "bytes"
    if pa.types.is_struct(kind) and {kind.field(i).name for i in range(kind.num_fields)} & {"bytes", "path"}:
        return "struct"
    raise ValueError(f"{path}: column 'image' has type {kind}; expected {IMAGE_FORMAT}")


def _parquet_records(path: Path, skips: Skips) -> list[Record]:
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    kind = _parquet_image_kind(path, handle.schema_arrow)
    others = [name for name in handle.schema_arrow.names if name != "image"]
    records = []
    number = 0
    for group in range(handle.num_row_groups):
        table = handle.read_row_group(group, columns=others + ["image"])
        images = table.column("image").combine_chunks()
        rows = table.select(others).to_pylist()
        paths: list = [None] * len(images)
        has_bytes = [False] * len(images)
        if kind == "path":
            paths = images.to_pylist()
        elif kind == "bytes":
            has_bytes = [size > 0 for size in _lengths(images)]
        else:
            names = {images.type.field(i).name for i in range(images.type.num_fields)}
            if "bytes" in names:
                has_bytes = [size > 0 for size in _lengths(images.field("bytes"))]
            if "path" in names:
                paths = images.field("path").to_pylist()
        for row, fields in enumerate(rows):
            number += 1
            skips.total += 1
            if has_bytes[row]:
                records.append(Record(number, fields, embedded=(group, row), unit="row"))
            elif paths[row] and str(paths[row]).strip():
                records.append(Record(number, fields, image=str(paths[row]).strip(), unit="row"))
            else:
                skips.skip(f"row {number}", "no image (neither bytes nor a path)")
    return records


def _lengths(array) -> list[int]:
    """Byte lengths of a binary arrow array's entries (0 for nulls), without copying the bytes."""
    import pyarrow.compute as pc

    return [0 if n is None else int(n) for n in pc.binary_length(array).to_pylist()]


def read_records(path: Path) -> tuple[list[Record], Skips, str]:
    """Every record of the table at ``path`` with an image, the skips so far, and the format. Errors:
    FileNotFoundError for a missing file, ValueError for an unknown format, a parquet file without an
    ``image`` column or with one of another type, or an unreadable file (each naming the file)."""
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{path} {state}; pass file=<a .jsonl or .parquet file>")
    fmt = table_format(path)
    if fmt == "parquet":
        parquet_image_kind(path)  # a file that is not parquet, or has no image column, is named here
    skips = Skips(path)
    try:
        records = _jsonl_records(path, skips) if fmt == "jsonl" else _parquet_records(path, skips)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err}); a .jsonl file holds one JSON object per line") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read it as {fmt} ({err})") from None
    if not skips.total:
        raise ValueError(f"{path}: no records; each {'line' if fmt == 'jsonl' else 'row'} is one item with an image")
    return records, skips, fmt


def parquet_image_kind(path: Path) -> str:
    """The ``image`` column's kind (``path``, ``bytes`` or ``struct``) from the parquet schema alone;
    ValueError naming the file when it is not parquet or has no usable ``image`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path}: not a readable parquet file ({err})") from None
    return _parquet_image_kind(path, schema)


def decode_bytes(data: bytes, where: str) -> Image.Image:
    """Image bytes as 8-bit RGB; BadImageError naming ``where`` when they do not decode."""
    try:
        return open_rgb(io.BytesIO(data))
    except BadImageError as err:
        raise BadImageError(where, err.reason) from err


class RecordSplit(ImageSplit):
    """A split whose items are the kept records of one table (JSONL or parquet), in file order.

    Subclasses read the table with :meth:`_read`, check each record's own fields, call
    :meth:`_image_problem` for its image and :meth:`_keep` with the records they keep."""

    file: Path

    @classmethod
    def available_splits(cls, **params: Any) -> list[str]:
        """All of ``SPLITS`` once the file exists and its format (and a parquet file's ``image`` column)
        is one this reads: checked before any model loads, so a bad file is a usage error."""
        path = Path(params["file"]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path} {'is a directory' if path.is_dir() else 'does not exist'}; pass file=<a .jsonl or .parquet file>")
        if table_format(path) == "parquet":
            parquet_image_kind(path)
        return list(cls.SPLITS)

    def _read(self, file: str) -> tuple[list[Record], Skips]:
        self.file = Path(file).expanduser()
        records, skips, self.format = read_records(self.file)
        self._struct = self.format == "parquet" and parquet_image_kind(self.file) == "struct"
        self._identities: dict[str, str] = {}
        self._locals: dict[str, str] = {}
        self._group_cache: tuple[int, Any] | None = None
        return records, skips

    def _resolve(self, image: str) -> Path:
        path = Path(image).expanduser()
        return path if path.is_absolute() else self.file.parent / path

    def _image_problem(self, record: Record) -> str:
        """'' when the record's image file exists (its identity is kept for the fingerprint), else why not."""
        if record.embedded is not None:
            return ""
        path = self._resolve(record.image)
        try:
            stat = path.stat()
        except OSError:
            return f"missing image {record.image}"
        if not path.is_file():
            return f"image {record.image} is not a file"
        self._identities[record.image] = file_identity(path, stat)
        self._locals[record.image] = local_identity(stat)
        return ""

    def _keep(self, records: list[Record], skips: Skips, fix: str, parts: list[str]) -> None:
        """Keep ``records`` as the split's items (after the bad-fraction check); ``parts`` are the
        subclass's own fingerprint parts (what it reads besides images)."""
        self.notes = skips.check(fix)
        self._numbers = np.array([r.number for r in records], dtype=np.int64)
        self._images = pack_paths([r.image for r in records])
        self._groups = np.array([r.embedded[0] if r.embedded else -1 for r in records], dtype=np.int64)
        self._rows = np.array([r.embedded[1] if r.embedded else -1 for r in records], dtype=np.int64)
        self._unit = records[0].unit if records else "line"
        self.labels = np.full(len(records), -1, dtype=np.int64)
        stat = self.file.stat()
        identity = [f"{self.name}", "records=1", f"split={self.split}", f"table={self.file.name}\t{file_identity(self.file, stat)}"]
        for r in records:
            image = f"embedded {r.embedded[0]}:{r.embedded[1]}" if r.embedded else f"{r.image}\t{self._identities[r.image]}"
            identity.append(f"{r.number}\t{image}")
        self.fingerprint = hash_parts(identity + parts)
        # The store key also sees renames and swaps (inode, ctime), as the folder datasets' do.
        self.local_fingerprint = hash_parts([self.fingerprint, local_identity(stat), *(self._locals.get(r.image, "") for r in records)])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_group_cache"] = None  # an arrow column is not worth shipping to workers
        state["_identities"] = {}
        state["_locals"] = {}
        return state

    def _bytes_at(self, group: int, row: int) -> bytes:
        """The embedded image bytes at (row group, row) of the parquet file (the last group read is kept)."""
        import pyarrow.parquet as pq

        if self._group_cache is None or self._group_cache[0] != group:
            column = pq.ParquetFile(self.file).read_row_group(group, columns=["image"]).column("image").combine_chunks()
            self._group_cache = (group, column.field("bytes") if self._struct else column)
        return self._group_cache[1][row].as_py()

    def _embedded(self, index: int) -> bytes:
        return self._bytes_at(int(self._groups[index]), int(self._rows[index]))

    def record_size(self, record: Record) -> tuple[int, int]:
        """(width, height) of a record's image from its header; BadImageError when it cannot be read."""
        if record.embedded is not None:
            source: Any = io.BytesIO(self._bytes_at(*record.embedded))
            where: Any = f"{self.file} {record.where} (embedded image)"
        else:
            source = where = self._resolve(record.image)
        try:
            with Image.open(source) as img:
                return img.size
        except (OSError, SyntaxError, ValueError) as err:
            raise BadImageError(where, f"{type(err).__name__}: {err}") from err

    def is_embedded(self, index: int) -> bool:
        return int(self._groups[self._check_index(index)]) >= 0

    def where(self, index: int) -> str:
        """``FILE line N`` (or ``row N`` for parquet): where item ``index`` comes from."""
        return f"{self.file} {self._unit} {int(self._numbers[self._check_index(index)])}"

    def path(self, index: int) -> Path:
        """The image file of item ``index`` (items whose image is a path)."""
        index = self._check_index(index)
        if self._groups[index] >= 0:
            raise NotImplementedError(f"{self.where(index)}: the image is embedded in the parquet file, not a file on disk")
        return self._resolve(unpack_path(self._images, index))

    def load_image(self, index: int) -> Image.Image:
        index = self._check_index(index)
        if self._groups[index] >= 0:
            return decode_bytes(self._embedded(index), f"{self.where(index)} (embedded image)")
        return open_rgb(self.path(index))

    def image_size(self, index: int) -> tuple[int, int]:
        """(width, height) of item ``index``'s image from its header; BadImageError when it cannot be read."""
        index = self._check_index(index)
        embedded = (int(self._groups[index]), int(self._rows[index])) if self._groups[index] >= 0 else None
        unit, number = self._unit, int(self._numbers[index])
        return self.record_size(Record(number, {}, image=unpack_path(self._images, index), embedded=embedded, unit=unit))

    def item_id(self, index: int) -> str:
        """``<file name>:<line>`` (JSONL) or ``<file name>:row<row>`` (parquet)."""
        number = int(self._numbers[self._check_index(index)])
        return f"{self.file.name}:{number}" if self._unit == "line" else f"{self.file.name}:row{number}"


def files_capability(file: str) -> bool:
    """Whether every image of the table is a file on disk, decided from the format alone: JSONL
    images are paths; a parquet ``image`` column of strings is paths, of bytes or structs is not."""
    path = Path(file).expanduser()
    if not path.is_file():
        return False
    try:
        fmt = table_format(path)
        return fmt == "jsonl" or parquet_image_kind(path) == "path"
    except (ValueError, OSError):
        return False

