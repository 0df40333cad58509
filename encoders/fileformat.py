"""What a file is, told from its first bytes, whatever its name says; and why a path cannot be opened.

Used to name the real cause when a checkpoint cannot be read: a safetensors file named ``.pt``, a torch
checkpoint named ``.safetensors``, a Git LFS pointer, a web page saved by a failed download, random bytes;
a symlink loop, a dangling link, a missing read permission.
"""
from __future__ import annotations

import errno
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

HEAD_BYTES = 64
# torch.save's legacy (non-zip) format starts with this number pickled (protocol 2, LONG1).
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
MAX_SAFETENSORS_HEADER = 100 * 2**20  # safetensors itself refuses larger headers


@dataclass(frozen=True)
class Sniffed:
    """A file's kind from its content: ``torch-zip``, ``torch-legacy``, ``safetensors`` (checkpoints),
    or ``pickle``, ``zip``, ``empty``, ``lfs-pointer``, ``html``, ``text``, ``numpy``, ``gguf``, ``hdf5``,
    ``unknown`` (not checkpoints this project reads). ``what`` says it in words, ``head`` shows the first bytes."""

    kind: str
    what: str
    head: str

    @property
    def is_torch(self) -> bool:
        return self.kind in ("torch-zip", "torch-legacy")

    @property
    def is_checkpoint(self) -> bool:
        return self.is_torch or self.kind == "safetensors"


def head_text(data: bytes, count: int = 8) -> str:
    """``50 4b 03 04 ...`` for the first ``count`` bytes."""
    return " ".join(f"{byte:02x}" for byte in data[:count])


def sniff(path: str | os.PathLike) -> Sniffed:
    """The kind of the file at ``path`` from its first bytes (raises OSError as ``open`` does)."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
        size = os.fstat(handle.fileno()).st_size
    shown = head_text(head)
    if not head:
        return Sniffed("empty", "an empty file (0 bytes)", shown)
    if head.startswith(b"PK\x03\x04"):
        name_length = struct.unpack("<H", head[26:28])[0] if len(head) >= 28 else 0
        first = head[30:30 + name_length].decode("utf-8", "replace")
        if first.endswith("data.pkl") or _zip_holds_pickle(path):
            return Sniffed("torch-zip", "a torch checkpoint (zip, as torch.save writes it)", shown)
        return Sniffed("zip", f"a zip archive (first entry {first!r}), not a torch checkpoint", shown)
    if head.startswith(TORCH_LEGACY_MAGIC):
        return Sniffed("torch-legacy", "a torch checkpoint (legacy non-zip torch.save format)", shown)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return Sniffed("pickle", "Python pickle data (pickle.dump), not a torch.save checkpoint", shown)
    if len(head) >= 9:
        header_length = struct.unpack("<Q", head[:8])[0]
        if head[8:9] == b"{" and 2 <= header_length <= MAX_SAFETENSORS_HEADER:
            return Sniffed("safetensors", "a safetensors file", shown)
    if head.startswith(b"\x93NUMPY"):
        return Sniffed("numpy", "a NumPy .npy array", shown)
    if head.startswith(b"GGUF"):
        return Sniffed("gguf", "a GGUF (llama.cpp) model", shown)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return Sniffed("hdf5", "an HDF5 file (e.g. Keras .h5)", shown)
    text = _as_text(path, head, size)
    if text is not None:
        stripped = text.lstrip().lower()
        if stripped.startswith("version https://git-lfs"):
            return Sniffed("lfs-pointer", "a Git LFS pointer (a small text file standing in for the weights)", shown)
        if stripped.startswith(("<!doctype html", "<html", "<?xml")):
            return Sniffed("html", "a web page (HTML), e.g. a login or error page saved by a download", shown)
        if stripped.startswith(("{", "[")) and _is_json(path, size):
            return Sniffed("text", "a JSON text file", shown)
        return Sniffed("text", "a text file", shown)
    return Sniffed("unknown", "of no format this project recognises", shown)


def _zip_holds_pickle(path: Path) -> bool:
    """A zip whose entries include torch's ``<archive>/data.pkl`` (when its directory can be read)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _as_text(path: Path, head: bytes, size: int) -> str | None:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        if len(head) == HEAD_BYTES and size > HEAD_BYTES:
            try:  # the cut may split a multi-byte character
                text = head[:-3].decode("utf-8")
            except UnicodeDecodeError:
                return None
        else:
            return None
    return text if all(ch.isprintable() or ch in "\r\n\t" for ch in text) else None


def _is_json(path: Path, size: int) -> bool:
    if size > 2**20:
        return False
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return False
    return True


def open_problem(path: str | os.PathLike) -> tuple[str, str] | None:
    """Why ``path`` cannot be opened for reading, as (problem, fix), or None when it can.

    Tells a symlink loop, a dangling symlink, a missing path, a permission refused (the file's or a
    folder's on the way) and a path through a file apart, which ``Path.exists()`` reports all as False.
    """
    path = Path(path)
    try:
        os.stat(path)
    except OSError as err:
        return _stat_problem(path, err)
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            return (f"no permission to list the directory (mode {_mode(path)})", f"grant read access (chmod u+rx {path}) or run as a user who has it")
        return None
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        return (f"no read permission (mode {_mode(path)}, owner uid {_owner(path)})", f"grant read access (chmod u+r {path}) or run as a user who has it")
    except IsADirectoryError:
        return None
    except OSError as err:
        return (f"cannot be read ({os.strerror(err.errno) if err.errno else err})", "check the disk or the mount the file is on, and copy it again")
    return None


def _stat_problem(path: Path, err: OSError) -> tuple[str, str]:
    if err.errno == errno.ELOOP:
        return ("is a symbolic link loop (the links point at each other and never reach a file)",
                f"point the link at the real checkpoint (ls -l {path}) or pass the file itself")
    if err.errno == errno.EACCES:
        return ("no permission to reach the file (a folder on the way is not searchable)", "grant access to the folders on the path (chmod u+x) or run as a user who has it")
    if err.errno == errno.ENOTDIR:
        return ("a part of the path is a file, not a folder", "check the path")
    if err.errno == errno.ENOENT and os.path.islink(path):
        return (f"is a symbolic link to {os.readlink(path)}, which does not exist (a dangling link)", "point the link at the real checkpoint or pass the file itself")
    if err.errno == errno.ENOENT:
        return ("no such file or directory", "check the path (relative paths are taken from the current directory or the manifest's folder)")
    return (f"cannot be opened ({os.strerror(err.errno) if err.errno else err})", "check the path and its permissions")


def _mode(path: Path) -> str:
    try:
        return oct(os.stat(path).st_mode & 0o777)
    except OSError:
        return "unknown"


def _owner(path: Path) -> str:
    try:
        return str(os.stat(path).st_uid)
    except OSError:
        return "unknown"
