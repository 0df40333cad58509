"""Image galleries: figure files that suites wrote into a run directory and referenced from a row's
``extra["figure"]`` (a path relative to the run directory, or a list of them), embedded as base64.

Galleries are grouped by (suite, task); inside a group images are ordered by role (original, sft,
pivot, others) and captioned with the encoder. Only PNG and JPEG files are embedded (checked by their
magic bytes, so an SVG with scripts can never reach the page); anything else, a missing file or a path
leaving the run directory becomes a visible note instead.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field

from reports.load import Lineage, LoadedRow, role_rank

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


@dataclass
class GalleryImage:
    encoder: str
    detail: str
    mime: str
    data_base64: str


@dataclass
class Gallery:
    suite: str
    task: str
    images: list[GalleryImage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _figure_paths(item: LoadedRow) -> list[str]:
    value = item.row.extra.get("figure")
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple)):
        return [entry for entry in value if isinstance(entry, str) and entry]
    return []


def _read_image(item: LoadedRow, relative: str) -> tuple[str, str] | str:
    """(mime, base64) of an image file, or a message saying why it cannot be embedded."""
    path = item.resolve(relative)
    if path is None:
        return f"{relative}: points outside the run directory {item.run.label}; not embedded"
    if not path.is_file():
        return f"{relative}: file not found in {item.run.label}"
    if path.stat().st_size > MAX_IMAGE_BYTES:
        return f"{relative}: larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB; not embedded"
    data = path.read_bytes()
    for magic, mime in MAGIC.items():
        if data.startswith(magic):
            return mime, base64.b64encode(data).decode("ascii")
    return f"{relative}: not a PNG or JPEG file; not embedded"


def lineage_galleries(lineage: Lineage) -> list[Gallery]:
    """Galleries of a lineage's figure files, one per (suite, task) that references any."""
    order = {info.name: (info.name != lineage.name, role_rank(info.role), index)
             for index, info in enumerate(lineage.encoders)}
    entries: dict[tuple[str, str], list[tuple[tuple, LoadedRow, str]]] = {}
    seen: set[tuple[str, str, str]] = set()
    for item in lineage.rows:
        for relative in _figure_paths(item):
            ident = (item.run.label, relative, item.row.encoder)
            if ident in seen:  # several metric rows often share one picture
                continue
            seen.add(ident)
            entries.setdefault((item.row.suite, item.row.task), []).append(
                (order.get(item.row.encoder, (True, 99, 99)), item, relative)
            )
    galleries = []
    for (suite, task), found in entries.items():
        gallery = Gallery(suite, task)
        for _, item, relative in sorted(found, key=lambda entry: entry[0]):
            image = _read_image(item, relative)
            if isinstance(image, str):
                gallery.notes.append(f"{item.row.encoder}: {image}")
            else:
                detail = " / ".join(part for part in (item.row.dataset, relative) if part)
                gallery.images.append(GalleryImage(item.row.encoder, detail, *image))
        galleries.append(gallery)
    return galleries
