"""Tables of image records, the common ground of the ``pairs`` and ``prefs`` kinds: a JSONL file (one
JSON object per line) or a parquet file (one record per row), each record with an ``image``.

``image`` is a path relative to the table file (or absolute): a string, or ``{"path": ...}``. In a
parquet file it may also be the image's bytes, as the parquet exports of Hugging Face datasets store
an ``Image`` feature: a binary column, or a struct ``{bytes, path}`` (the bytes when present, else the
path). JSONL is read by the project's one record reader (``common.records``, which ``train`` reads its
files with too); its ``Skips`` count the records that cannot be used by reason, the first few named by
line (JSONL) or row (parquet), and above ``MAX_BAD_FRACTION`` of the table the split is refused with a
``DataError`` naming the file. Embedded images are read from their parquet row group when asked for
(the last group read is kept), so a split holds only offsets and pickles cheaply into DataLoader workers.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common.errors import DataError
from common.records import MAX_BAD_FRACTION, Record, Skips, read_jsonl

from .base import BadImageError, ImageSplit, hash_parts, open_rgb
from .files import file_identity, local_identity, pack_paths, unpack_path

__all__ = ["MAX_BAD_FRACTION", "DataWarning", "Record", "RecordSplit", "Skips", "files_capability", "read_records", "table_format"]

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
IMAGE_FORMAT = (
    "image: a path relative to the file (or absolute), or, in parquet, the image bytes (a binary column or a "
    "{bytes, path} struct as in Hugging Face parquet exports)"
)
TABLE_FIX = "pass file=<a .jsonl (one JSON object per line) or .parquet file>"


class DataWarning(UserWarning):
    """Items of a dataset file that were skipped (counted and named), below the error threshold."""


def table_format(path: Path) -> str:
    """``jsonl`` or ``parquet`` by the file's suffix; DataError naming the file and the suffixes read."""
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise DataError(f"{path}: unknown table format {path.suffix or '(no suffix)'}", "name it .jsonl (one JSON object per line) or .parquet")
    return found


def checked_notes(skips: Skips, fix: str) -> list[str]:
    """``skips.check(fix)`` (DataError above the threshold), its note issued as a ``DataWarning`` and
    returned as the split's notes (empty when nothing was skipped)."""
    note = skips.check(fix)
    if not note:
        return []
    warnings.warn(note, DataWarning, stacklevel=3)
    return [note]


def _parquet_image_kind(path: Path, schema) -> str:
    """``path``, ``bytes`` or ``struct`` for the ``image`` column's arrow type; DataError otherwise."""
    import pyarrow as pa

    require_column(path, schema.names, "image", f"name the image column image ({IMAGE_FORMAT})")
    kind = schema.field("image").type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "path"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "bytes"
    if pa.types.is_struct(kind) and {kind.field(i).name for i in range(kind.num_fields)} & {"bytes", "path"}:
        return "struct"
    raise DataError(f"{path}: column 'image' has type {kind}", f"store {IMAGE_FORMAT}")


def require_column(path: Path, columns: list[str], name: str, fix: str) -> None:
    """DataError naming the parquet file and its columns when column ``name`` is not among them."""
    if name not in columns:
        raise DataError(f"{path}: parquet file has no '{name}' column (columns: {', '.join(columns) or 'none'})", fix)


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
    """Every record of the table at ``path`` with an image, the skips so far, and the format. DataError
    naming the file when it is missing, of an unknown format, not UTF-8 (JSONL), not readable parquet or
    a parquet file without a usable ``image`` column."""
    require_table(path)
    fmt = table_format(path)
    skips = Skips(path)
    if fmt == "jsonl":
        return read_jsonl(path, skips), skips, fmt
    parquet_image_kind(path)  # a file that is not parquet, or has no image column, is named here
    try:
        return _parquet_records(path, skips), skips, fmt
    except OSError as err:
        raise DataError(f"{path}: cannot read it as parquet ({err})", TABLE_FIX) from None


def require_table(path: Path) -> None:
    """DataError naming ``path`` unless it is a file."""
    if not path.is_file():
        raise DataError(f"{path} {'is a directory' if path.is_dir() else 'does not exist'}", TABLE_FIX)


def parquet_schema(path: Path):
    """The arrow schema of a parquet file; DataError naming the file when it is not readable parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable parquet file ({err})", TABLE_FIX) from None


def parquet_image_kind(path: Path) -> str:
    """The ``image`` column's kind (``path``, ``bytes`` or ``struct``) from the parquet schema alone;
    DataError naming the file when it is not parquet or has no usable ``image`` column."""
    return _parquet_image_kind(path, parquet_schema(path))


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
        require_table(path)
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

    def _require_columns(self, names: tuple[str, ...], fix: str) -> None:
        """A parquet table has columns ``names`` (DataError naming the file, its columns and ``fix``); a
        JSONL file's records are checked one by one."""
        if self.format == "parquet":
            columns = list(parquet_schema(self.file).names)
            for name in names:
                require_column(self.file, columns, name, fix)

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
        self.notes = checked_notes(skips, fix)
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
    except (DataError, OSError):
        return False

