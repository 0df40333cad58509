"""Directory scanning shared by the on-disk datasets (fast: one ``os.scandir`` per folder)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from common.errors import DataError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def require_dir(path: Path, what: str, layout: str) -> None:
    """DataError naming ``path`` (and the expected layout, as its fix) if ``path`` is not a directory."""
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "does not exist"
        raise DataError(f"{what} {path} {state}", layout_fix(layout))


def layout_fix(layout: str) -> str:
    """A dataset's layout (one path per line) as the one-line fix of a DataError."""
    return "expected layout: " + "; ".join(line.strip() for line in layout.splitlines() if line.strip())


def subdirs(folder: Path) -> list[str]:
    """Sorted names of the visible subdirectories of ``folder``."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


_VERIFY_CONTENT = False


def set_verify_content(enabled: bool) -> None:
    """Include a sha256 of every file's bytes in its identity (``benchmarks.run --verify-data``): slower
    (every image is read once per fingerprint), but a file rewritten with the same size and mtime is caught."""
    global _VERIFY_CONTENT
    _VERIFY_CONTENT = bool(enabled)


def file_identity(path: str | os.PathLike, stat: os.stat_result) -> str:
    """What a dataset fingerprint records per file: ``size<TAB>mtime in ns`` (plus ``<TAB>sha256:<hex>``
    when content verification is on)."""
    identity = f"{stat.st_size}\t{stat.st_mtime_ns}"
    if _VERIFY_CONTENT:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        identity += f"\tsha256:{digest.hexdigest()}"
    return identity


def local_identity(stat: os.stat_result) -> str:
    """What the feature store adds per file: ``inode<TAB>status-change time in ns``. Unlike the size and
    modification time, these change when a file is renamed over another (``mv``: two same-size images
    swapped keep their modification times, but not their inodes, and a rename sets the ctime) or
    rewritten in place with its modification time put back (``os.utime`` sets the ctime). They also change
    when the folder is copied elsewhere, so they identify this copy of the data, never the dataset: they
    enter the store key only (``ImageSplit.local_fingerprint``), not the fingerprint that result rows carry."""
    return f"{stat.st_ino}\t{stat.st_ctime_ns}"


class FileEntry(NamedTuple):
    """One image file of a folder: its ``name``, :func:`file_identity` and :func:`local_identity`."""

    name: str
    identity: str
    local: str


def image_files(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[FileEntry]:
    """Sorted :class:`FileEntry` of the visible files in ``folder`` whose extension (any case) is in
    ``extensions`` (one ``stat`` per file serves both identities)."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.lower().endswith(extensions):
                continue
            if entry.is_file():
                stat = entry.stat()
                found.append(FileEntry(entry.name, file_identity(entry.path, stat), local_identity(stat)))
    found.sort()
    return found


def name_list(names: list[str], limit: int = 10) -> str:
    """``a, b, c`` (and how many more) for error messages."""
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def pack_paths(paths: list[str]) -> np.ndarray:
    """Relative paths as one fixed-width bytes array: compact, and cheap to pickle into workers."""
    return np.array([os.fsencode(p) for p in paths], dtype=bytes) if paths else np.zeros(0, dtype="S1")


def unpack_path(packed: np.ndarray, index: int) -> str:
    return os.fsdecode(bytes(packed[index]))

