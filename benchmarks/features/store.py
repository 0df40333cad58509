"""The on-disk feature store: entries keyed by (weights hash, dataset fingerprint, split, transform, layers,
precision[, patch tokens][, decode]), written shard by shard, merged, checked and memory-mapped.

Layout of one entry ``<cache>/<key>/``: ``meta.json`` (what the key stands for); while extracting,
shards ``shard-00000.<name>.npy`` (features in fp16, or fp32 for a shard whose values fp16 cannot
keep: see :func:`storage_dtype`; int64 labels, uint8 validity) each written to a temp file and renamed,
so a killed run resumes at the first missing shard; once every shard exists they are merged, streamed,
into one ``<name>.npy`` per array (fp32 if any shard of it is), ``done.json`` (recording each feature's
stored dtype and shape) is written and the shards are removed. A finished entry is memory-mapped on read.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from encoders import Encoder
from imagesets import ImageSplit

from .config import FeatureError

STORE_VERSION = 2
DONE_FILE = "done.json"
META_FILE = "meta.json"
# fp16 keeps about 3 significant digits (relative error <= 2**-11 for normal values); a row whose
# round trip errs by more than this has under- or overflowed and is stored in fp32 instead.
FP16_MAX_ROW_ERROR = 1e-3


@dataclass
class FeatureSet:
    """Features of one split: ``arrays[name]`` (n, D) fp16 memory maps ((n, h*w, D) for ``tokens.L*``), ``labels`` (n,), ``valid`` (n,) bool
    (False for images that could not be read: their rows are zeros and must be left out)."""

    key: str
    arrays: dict[str, np.ndarray]
    labels: np.ndarray
    valid: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def bad_count(self) -> int:
        return int((~self.valid).sum())

    def tensor(self, name: str) -> torch.Tensor:
        """Valid rows of feature ``name`` as a float32 tensor."""
        if name not in self.arrays:
            raise KeyError(f"feature {name!r} not in the store entry {self.key}; have {sorted(self.arrays)}")
        return torch.from_numpy(np.asarray(self.arrays[name][self.valid], dtype=np.float32))

    def valid_labels(self) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.labels[self.valid], dtype=np.int64))


def store_key(encoder: Encoder, split: ImageSplit, layers: Sequence[int], precision: str, patch_layers: Sequence[int] = (), decode: str = "cpu") -> tuple[str, dict]:
    """Cache key (hex) and the description it hashes (``patch_layers`` only when patch tokens are kept,
    ``decode`` only when not the default, so that entries without them keep their keys)."""
    meta = {
        "version": STORE_VERSION,
        "weights_hash": encoder.weights_hash,
        "dataset_fingerprint": split.fingerprint,
        "split": split.split,
        "transform": encoder.preprocess.cache_key(),
        "layers": list(layers),
        "precision": precision,
    }
    if patch_layers:
        meta["patch_tokens"] = list(patch_layers)
    if decode != "cpu":
        meta["decode"] = decode
    local = getattr(split, "local_fingerprint", "")
    if local:  # files renamed, swapped or rewritten in place make a new entry (generated datasets have none)
        meta["local_fingerprint"] = local
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:32], meta


def storage_dtype(values: np.ndarray) -> np.dtype:
    """float16 when every row of ``values`` (n, D) survives the fp16 round trip within
    ``FP16_MAX_ROW_ERROR`` relative (L2) error, else float32: values beyond 65504 (overflow) or so
    small that fp16 keeps only a handful of distinct numbers (underflow, e.g. around 1e-8) keep fp32."""
    values = np.asarray(values, dtype=np.float32)
    if not values.size:
        return np.dtype(np.float16)
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = values.astype(np.float16).astype(np.float32)
        if not np.isfinite(rounded).all():
            return np.dtype(np.float32)
        flat = values.reshape(len(values), -1)
        error = np.linalg.norm(rounded.reshape(len(values), -1) - flat, axis=1)
        scale = np.linalg.norm(flat, axis=1)
    lossy = error > FP16_MAX_ROW_ERROR * scale
    return np.dtype(np.float32 if lossy.any() else np.float16)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def shard_done(entry: Path, shard: int) -> bool:
    """True when shard ``shard`` of ``entry`` is complete (its validity file, written last, exists)."""
    return (entry / f"shard-{shard:05d}.valid.npy").exists()


def write_shard(entry: Path, shard: int, features: Mapping[str, np.ndarray], labels: np.ndarray, valid: np.ndarray) -> None:
    """Write one shard's arrays, each atomically: features in fp16 (fp32 where fp16 would lose them),
    int64 labels, uint8 validity last (its presence marks the shard complete)."""
    for name, values in features.items():
        _atomic_save(entry / f"shard-{shard:05d}.{name}.npy", values.astype(storage_dtype(values)))
    _atomic_save(entry / f"shard-{shard:05d}.labels.npy", labels.astype(np.int64))
    _atomic_save(entry / f"shard-{shard:05d}.valid.npy", valid.astype(np.uint8))


def write_meta(entry: Path, meta: dict) -> None:
    """``meta.json``: what the entry's key stands for (and, for people, which encoder and dataset)."""
    (entry / META_FILE).write_text(json.dumps(meta, indent=2))


def merge_shards(entry: Path, shards: list[range], names: list[str], total: int) -> None:
    """Merge the shards into one file per array, streamed (one shard in memory at a time), mark the
    entry done, then drop the shards: readers memory-map a single file instead of concatenating."""
    missing = [i for i in range(len(shards)) if not shard_done(entry, i)]
    if missing:
        raise FeatureError(f"{entry}: shards {missing[:5]} are missing after extraction; rerun to resume")
    dtypes = {}
    for name in names + ["labels", "valid"]:
        parts = [entry / f"shard-{i:05d}.{name}.npy" for i in range(len(shards))]
        first = np.load(parts[0], mmap_mode="r")
        # One fp32 shard (fp16 lost precision there) makes the whole array fp32: never degrade it.
        dtype = np.result_type(*(np.load(part, mmap_mode="r").dtype for part in parts))
        dtypes[name] = str(dtype)
        tmp = entry / f"{name}.npy.tmp{os.getpid()}"
        merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(total, *first.shape[1:]))
        for part, rows in zip(parts, shards):
            merged[rows.start : rows.stop] = np.load(part, mmap_mode="r")
        merged.flush()
        del merged
        os.replace(tmp, entry / f"{name}.npy")
    shapes = {name: list(np.load(entry / f"{name}.npy", mmap_mode="r").shape) for name in names + ["labels", "valid"]}
    tmp = entry / (DONE_FILE + ".tmp")
    tmp.write_text(json.dumps({"shards": len(shards), "images": total, "features": names, "dtypes": {n: dtypes[n] for n in names}, "shapes": shapes}))
    os.replace(tmp, entry / DONE_FILE)
    for shard_file in entry.glob("shard-*.npy"):
        shard_file.unlink()


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset in bytes) from a ``.npy`` file's header; ValueError when it has none."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(handle)
        return tuple(shape), dtype, handle.tell()


def _array_damage(path: Path, total: int, shape_recorded: list | None, dtype_recorded: str | None) -> str:
    """What is wrong with one merged array file against ``done.json``, or ''."""
    try:
        size = path.stat().st_size
        shape, dtype, offset = _npy_header(path)
    except FileNotFoundError:
        return f"{path.name} missing"
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        return f"{path.name} has no readable array header ({type(err).__name__})"
    expected_bytes = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not shape or shape[0] != total:
        return f"{path.name} holds {shape[0] if shape else 0} rows, done.json says {total} images"
    if shape_recorded is not None and list(shape) != list(shape_recorded):
        return f"{path.name} has shape {list(shape)}, done.json says {shape_recorded}"
    if dtype_recorded is not None and str(dtype) != dtype_recorded:
        return f"{path.name} is {dtype}, done.json says {dtype_recorded}"
    if size != expected_bytes:
        return f"{path.name} is {size} bytes, its shape {list(shape)} needs {expected_bytes}"
    return ""


def entry_damage(entry: Path, names: Sequence[str]) -> list[str]:
    """What is wrong with a finished store entry, checked against its ``done.json`` without reading the
    data: every array file present, a readable ``.npy`` header, as many rows as images, the recorded
    dtype and shape, and exactly the bytes that shape needs (a truncated or padded file is caught).
    Empty when the entry is sound."""
    try:
        done = json.loads((entry / DONE_FILE).read_text())
        total = int(done["images"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"done.json unreadable ({type(err).__name__})"]
    dtypes = done.get("dtypes", {}) if isinstance(done.get("dtypes"), dict) else {}
    shapes = done.get("shapes", {}) if isinstance(done.get("shapes"), dict) else {}
    problems = [_array_damage(entry / f"{name}.npy", total, shapes.get(name), dtypes.get(name)) for name in [*names, "labels", "valid"]]
    return [problem for problem in problems if problem]


def discard_entry(entry: Path) -> None:
    """Remove a damaged entry's results (``done.json`` first, so no reader takes it for finished), keeping ``meta.json``."""
    (entry / DONE_FILE).unlink(missing_ok=True)
    for path in entry.glob("*.npy"):
        path.unlink()


def open_entry(entry: Path, key: str, names: list[str], meta: dict) -> FeatureSet:
    """The finished entry's arrays, memory-mapped (nothing is read until used)."""
    def load(name: str) -> np.ndarray:
        return np.load(entry / f"{name}.npy", mmap_mode="r")

    return FeatureSet(key, {name: load(name) for name in names}, load("labels"), load("valid").astype(bool), dict(meta))
