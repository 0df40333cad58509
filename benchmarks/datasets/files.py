"""Directory scanning shared by the on-disk datasets (fast: one ``os.scandir`` per folder)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def require_dir(path: Path, what: str, layout: str) -> None:
    """FileNotFoundError naming ``path`` and the expected layout if ``path`` is not a directory."""
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{what} {path} {state}. Expected layout:\n{layout}")


def subdirs(folder: Path) -> list[str]:
    """Sorted names of the visible subdirectories of ``folder``."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def image_files(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[tuple[str, int]]:
    """Sorted ``(name, size in bytes)`` of the visible files in ``folder`` whose extension (any case)
    is in ``extensions``."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.lower().endswith(extensions):
                continue
            if entry.is_file():
                found.append((entry.name, entry.stat().st_size))
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

