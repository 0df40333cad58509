"""A content-addressed feature store: features are computed once per
(weights hash, dataset fingerprint, split, transform, layers, precision) and never again.

Layout of one entry ``<cache>/<key>/``: ``meta.json`` (what the key stands for); while extracting,
shards ``shard-00000.<name>.npy`` (features in fp16, or fp32 for a shard whose values fp16 cannot
keep: see ``storage_dtype``; int64 labels, uint8 validity) each written to a temp
file and renamed, so a killed run resumes at the first missing shard; once every shard exists they are
merged, streamed, into one ``<name>.npy`` per array (fp32 if any shard of it is), ``done.json``
(recording each feature's stored dtype) is written and the shards are
removed. A finished entry is memory-mapped on read. Under torchrun, rank r extracts the shards with
``index % world_size == r`` into the same entry and rank 0 merges them.

Stored per image, for the last block and each requested intermediate block ``L``:
``cls`` / ``L{L}.cls`` (the model's pooled output for the last block; the CLS token, or the patch
mean when there is none, for intermediate blocks) and ``mean`` / ``L{L}.mean`` (mean of patch tokens).
On request (``patch_layers``, part of the key) also the patch tokens ``tokens.L{L}`` (n, h*w, D) of each
requested block, row-major over the encoder's own grid (h, w); the last block's are its final
(normed) patch tokens. Their size on disk is printed before extraction and refused when the disk has
less room.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset

from benchmarks.datasets import IMAGE_FILES, BadImageError, ImageSplit
from encoders import Encoder

STORE_VERSION = 2
DEFAULT_SHARD_SIZE = 1024
PRECISIONS = ("fp32", "bf16", "bf16-weights", "int8-dynamic")
DECODES = ("cpu", "gpu")


class FeatureError(RuntimeError):
    """Features that cannot be used (NaN/Inf, too many unreadable images); names encoder, layer and fix."""


@dataclass
class ExtractionConfig:
    """How to extract: batch size, DataLoader workers, ``precision``, device, the largest tolerated
    fraction of unreadable images, and the shard size (images per file).

    ``precision`` (part of the store key, since it changes the numbers): ``fp32``; ``bf16`` (autocast:
    fp32 weights, bf16 matmuls); ``bf16-weights`` (a bf16 copy of the model, bf16 activations
    throughout); ``int8-dynamic`` (CPU only: a copy whose Linear layers hold per-channel int8 weights
    and quantise their inputs per batch). The bf16 modes are fast only on hardware with native bf16
    (AVX-512 BF16 / AMX CPUs, GPUs); on AVX2-only CPUs bf16 is emulated and far slower than fp32, and
    ``int8-dynamic`` is the lever that helps. The caller's encoder is never modified.
    ``compile`` runs the feature call through ``torch.compile`` (same math in fused kernels, so it is
    not part of the key; compiling costs about a minute on CPU, worth it for large splits only).
    ``decode``: ``cpu`` (PIL decode, resize and crop in the DataLoader workers) or ``gpu`` (workers read
    the file bytes; torchvision decodes them on ``device`` in batches, nvJPEG on CUDA, then resizes
    with antialias and crops there). Only for datasets of image files (``imagenet``). Its pixels
    differ slightly from PIL's, so ``gpu`` is part of the store key.
    """

    batch_size: int = 64
    workers: int = 0
    precision: str = "fp32"
    device: str = "cpu"
    max_bad_fraction: float = 0.05
    shard_size: int = DEFAULT_SHARD_SIZE
    progress: bool = True
    compile: bool = False
    decode: str = "cpu"


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


def feature_names(layers: Sequence[int]) -> list[str]:
    return ["cls", "mean"] + [f"L{layer}.{pool}" for layer in layers for pool in ("cls", "mean")]


def token_names(patch_layers: Sequence[int]) -> list[str]:
    return [f"tokens.L{layer}" for layer in patch_layers]


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


class _TransformedSplit(Dataset):
    """(image tensor, label, index, readable) for a DataLoader; unreadable images become zeros."""

    def __init__(self, split: ImageSplit, transform, resolution: int, indices: Sequence[int]) -> None:
        self.split, self.transform, self.resolution, self.indices = split, transform, resolution, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = self.indices[position]
        label = int(self.split.labels[index]) if len(self.split.labels) else -1
        try:
            image = self.transform(self.split.load_image(index))
            return image, label, index, True
        except BadImageError:
            return torch.zeros(3, self.resolution, self.resolution, dtype=torch.uint8), label, index, False


def _uint8_transform(preprocess):
    """The encoder's eval transform up to (not including) ``ToTensor``/``Normalize``: PIL -> uint8 (3, R, R).

    Workers hand these uint8 pixels over (a quarter of float32's bytes through queues and to the
    device); :func:`_normalize_on_device` then does exactly what ``ToTensor`` + ``Normalize`` did
    (``/ 255``, ``- mean``, ``/ std`` in float32, in that order), so the inputs are bit-identical."""
    from torchvision import transforms as T

    steps = preprocess.transform().transforms
    if not (isinstance(steps[-2], T.ToTensor) and isinstance(steps[-1], T.Normalize)):
        raise TypeError(f"expected a transform ending in ToTensor, Normalize; got {steps}")
    return T.Compose([*steps[:-2], T.PILToTensor()])


def _normalize_on_device(images: torch.Tensor, valid: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: str) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> normalised float32 on ``device`` (rows of unreadable images stay zeros, as before)."""
    x = images.to(device, non_blocking=True).to(torch.float32).div_(255)
    x.sub_(torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1))
    x.div_(torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1))
    if not bool(valid.all()):
        x[~valid.to(x.device)] = 0.0
    return x


def _prefetch(loader, device: str) -> Iterator[tuple]:
    """Batches of ``loader`` with their images already on ``device``. On CUDA the next batch's (pinned,
    non-blocking) copy is issued on a side stream before the current batch is handed out, so it
    overlaps the current forward; elsewhere batches pass through unchanged."""
    if torch.device(device).type != "cuda":
        yield from loader
        return
    stream = torch.cuda.Stream(device=device)

    def start(batch):
        images, *rest = batch
        with torch.cuda.stream(stream):
            images = images.to(device, non_blocking=True)
        return (images, *rest)

    batches = iter(loader)
    upcoming = next(batches, None)
    upcoming = None if upcoming is None else start(upcoming)
    while upcoming is not None:
        torch.cuda.current_stream(device).wait_stream(stream)
        current = upcoming
        current[0].record_stream(torch.cuda.current_stream(device))
        following = next(batches, None)
        upcoming = None if following is None else start(following)
        yield current


class _FileBytes(Dataset):
    """(file bytes as a uint8 numpy array, label, index, readable) per image, for device-side decoding.
    numpy arrays, not tensors: thousands of small tensors through worker queues exhaust file descriptors."""

    def __init__(self, split: ImageSplit, indices: Sequence[int]) -> None:
        self.split, self.indices = split, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = self.indices[position]
        label = int(self.split.labels[index]) if len(self.split.labels) else -1
        try:
            data = np.fromfile(self.split.path(index), dtype=np.uint8)
        except OSError:
            data = np.zeros(0, dtype=np.uint8)
        return data, label, index, data.size > 0


def _collate_bytes(batch: list) -> tuple:
    data, labels, index, valid = zip(*batch)
    return list(data), torch.tensor(labels), torch.tensor(index), torch.tensor(valid)


def decode_resize_crop(files: Sequence[np.ndarray], preprocess, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode encoded images on ``device`` (JPEGs in one batched ``decode_jpeg`` call, nvJPEG on CUDA;
    other formats on CPU), resize the shorter side to ``resolution / crop_pct`` with antialias and
    centre-crop ``resolution``, as the PIL transform does. Returns uint8 (B, 3, R, R) on ``device`` and
    a bool (B,) readable mask (undecodable files give zero images)."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    resolution = preprocess.resolution
    size = int(round(resolution / preprocess.crop_pct))
    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR, "nearest": InterpolationMode.NEAREST}[preprocess.interpolation]
    decoded: list[torch.Tensor | None] = [None] * len(files)
    jpegs = [i for i, data in enumerate(files) if data.size > 3 and data[0] == 0xFF and data[1] == 0xD8]
    if jpegs:
        try:
            images = decode_jpeg([torch.from_numpy(files[i]) for i in jpegs], mode=ImageReadMode.RGB, device=device)
            for i, image in zip(jpegs, images):
                decoded[i] = image
        except RuntimeError:
            for i in jpegs:  # one bad file fails the batch: decode one by one to find it
                with contextlib.suppress(RuntimeError):
                    decoded[i] = decode_jpeg(torch.from_numpy(files[i]), mode=ImageReadMode.RGB, device=device)
    for i, data in enumerate(files):
        if decoded[i] is None and i not in jpegs and data.size:
            with contextlib.suppress(RuntimeError):
                decoded[i] = decode_image(torch.from_numpy(data), mode=ImageReadMode.RGB).to(device)
    out = torch.zeros(len(files), 3, resolution, resolution, dtype=torch.uint8, device=device)
    for i, image in enumerate(decoded):
        if image is not None:
            image = TF.resize(image, [size], interpolation=mode, antialias=True)
            out[i] = TF.center_crop(image, [resolution, resolution])
    return out, torch.tensor([image is not None for image in decoded])


def _device_decoded(split: ImageSplit, indices: Sequence[int], preprocess, config: ExtractionConfig) -> Iterator[tuple]:
    """Batches (uint8 images on the device, labels, indices, readable) decoded on ``config.device``."""
    loader = DataLoader(_FileBytes(split, indices), batch_size=config.batch_size, num_workers=config.workers, collate_fn=_collate_bytes, persistent_workers=False)
    for files, labels, index, valid in loader:
        images, readable = decode_resize_crop(files, preprocess, config.device)
        yield images, labels, index, valid & readable


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _autocast(precision: str, device: str):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _feature_dict(encoder: Encoder, images: torch.Tensor, layers: Sequence[int], patch_layers: Sequence[int] = ()) -> dict[str, torch.Tensor]:
    last = encoder.num_layers - 1
    out = encoder.features(images, layers=sorted(set(layers) | {layer for layer in patch_layers if layer != last}))
    features = {"cls": out.pooled, "mean": out.patch_tokens.mean(dim=1)}
    for layer, tokens in out.layers.items():
        features[f"L{layer}.cls"] = tokens.pooled()
        features[f"L{layer}.mean"] = tokens.patches.mean(dim=1)
    for layer, name in zip(patch_layers, token_names(patch_layers)):
        features[name] = out.patch_tokens if layer == last else out.layers[layer].patches
    return features


# Prepared feature calls per encoder, so that the train and eval splits of one run share one
# reduced-precision copy and one compilation. Values never reference their key (the encoder is passed
# in at call time), so an encoder that is dropped is freed.
_PREPARED: weakref.WeakKeyDictionary[Encoder, dict[tuple, tuple]] = weakref.WeakKeyDictionary()


def _feature_fn(encoder: Encoder, layers: Sequence[int], config: ExtractionConfig, patch_layers: Sequence[int] = ()) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """``images -> {feature name: (B, D) or (B, h*w, D) tensor}`` for ``config.precision`` and ``config.compile``."""
    cache_key = (config.precision, config.compile, tuple(layers), tuple(patch_layers), config.device)
    prepared = _PREPARED.setdefault(encoder, {})
    if cache_key not in prepared:
        copied, input_dtype = None, torch.float32
        if config.precision == "bf16-weights":
            copied, input_dtype = copy.deepcopy(encoder).to(torch.bfloat16), torch.bfloat16
        elif config.precision == "int8-dynamic":
            if torch.device(config.device).type != "cpu":
                raise ValueError(f"precision int8-dynamic runs on CPU only (device {config.device!r}); use bf16-weights on GPUs")
            from torch.ao.quantization import (
                per_channel_dynamic_qconfig,
                quantize_dynamic,
            )

            copied = copy.deepcopy(encoder)
            with warnings.catch_warnings():
                # torch.ao.quantization announces its move to torchao; the pinned torch still ships it.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", UserWarning)
                copied.model = quantize_dynamic(copied.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
        device = config.device

        def run(model: Encoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
            return _feature_dict(model, images.to(device, dtype=input_dtype, non_blocking=True), layers, patch_layers)

        prepared[cache_key] = (copied, torch.compile(run, dynamic=False) if config.compile else run)
    copied, fn = prepared[cache_key]
    model = copied if copied is not None else encoder
    return lambda images: fn(model, images)


def _batch_features(encoder: Encoder, fn: Callable, images: torch.Tensor, config: ExtractionConfig) -> dict[str, torch.Tensor]:
    count = images.shape[0]
    if config.compile and count < config.batch_size:
        # A compiled call is specialised to one batch shape: pad the last batch instead of recompiling.
        images = torch.cat([images, images.new_zeros(config.batch_size - count, *images.shape[1:])])
    with torch.inference_mode(), _autocast(config.precision, config.device):
        features = fn(images)
    # A copy, never a view: a pooled CLS row is a slice of the batch's whole token tensor, and a view
    # kept until the shard is flushed would keep every token of every batch alive.
    features = {name: value[:count].to("cpu", torch.float32, copy=True) for name, value in features.items()}
    for name, value in features.items():
        where = f"encoder {encoder.name} ({encoder.weights_hash[:12]}), layer {name.split('.')[0] if '.' in name else 'last block'}, feature {name!r}"
        if not torch.isfinite(value).all():
            raise FeatureError(f"features of {where} contain NaN/Inf in {int((~torch.isfinite(value)).flatten(1).any(dim=1).sum())} of {len(value)} rows; check the checkpoint (python -m encoders inspect) or use --precision fp32")
    return features


TOKEN_SHARD_BYTES = 256 * 1024**2  # fp32 tokens held per shard before it is written


def token_grid(encoder: Encoder) -> tuple[int, int]:
    """The encoder's own patch grid (h, w) at its input resolution (one forward of a blank image)."""
    resolution = encoder.preprocess.resolution
    parameter = next(encoder.parameters(), None)
    blank = torch.zeros(1, 3, resolution, resolution, device=parameter.device if parameter is not None else "cpu")
    with torch.inference_mode():
        out = encoder.features(blank)
    h, w = out.grid
    if h * w != out.patch_tokens.shape[1]:
        raise FeatureError(f"encoder {encoder.name} reports grid {h}x{w} but returns {out.patch_tokens.shape[1]} patch tokens")
    return int(h), int(w)


def _check_token_size(encoder: Encoder, split: ImageSplit, entry: Path, token_layers: Sequence[int], config: ExtractionConfig, log) -> int:
    """Print the patch tokens' size on disk, refuse it when the disk has less room; returns the shard
    size (images) that keeps a shard's tokens under ``TOKEN_SHARD_BYTES`` in memory."""
    h, w = token_grid(encoder)
    per_image = h * w * encoder.embed_dim * len(token_layers)
    needed = len(split) * per_image * 2
    free = shutil.disk_usage(entry).free
    log(f"patch tokens of {encoder.name} on {split.spec}/{split.split}: {len(split)} images x {h}x{w} tokens x {encoder.embed_dim} x {len(token_layers)} block(s), fp16 = {needed / 1024**2:.1f} MiB on disk ({free / 1024**3:.1f} GiB free in {entry.parent})")
    # Shards and the merged file coexist until the merge ends: twice the size is needed at the peak.
    if 2 * needed > free:
        raise FeatureError(f"patch tokens need {2 * needed / 1024**3:.2f} GiB while extracting ({needed / 1024**3:.2f} GiB kept) but {entry.parent} has {free / 1024**3:.2f} GiB free; point --cache-dir at a larger disk or request fewer blocks")
    return max(1, min(config.shard_size, TOKEN_SHARD_BYTES // (per_image * 4)))


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _shard_ranges(n: int, shard_size: int) -> list[range]:
    return [range(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def extract_features(
    encoder: Encoder,
    split: ImageSplit,
    cache_dir: str | os.PathLike,
    *,
    layers: Sequence[int] | str | None = None,
    config: ExtractionConfig = ExtractionConfig(),
    log=print,
    patch_layers: Sequence[int] | None = None,
) -> FeatureSet:
    """Features of every image of ``split`` from the store, extracting the missing shards first.

    ``patch_layers`` (block indices, -1 = last) also keeps those blocks' patch tokens (fp16, n x h*w x D)."""
    if len(split) == 0:
        raise FeatureError(f"{split!r} is empty: no images to extract features from")
    resolved = encoder.resolve_layers(layers)
    token_layers = encoder.resolve_layers(patch_layers) if patch_layers else []
    _autocast(config.precision, config.device)  # rejects an unknown precision before anything is written
    if config.decode not in DECODES:
        raise ValueError(f"unknown decode mode {config.decode!r}; use one of {', '.join(DECODES)}")
    if config.decode == "gpu" and IMAGE_FILES not in type(split).CAPABILITIES:
        raise ValueError(f"--decode gpu reads image files, but {split.spec} has none (use it with imagenet:root=...; or --decode cpu)")
    key, meta = store_key(encoder, split, resolved, config.precision, token_layers, config.decode)
    entry = Path(cache_dir) / key
    entry.mkdir(parents=True, exist_ok=True)
    names = feature_names(resolved) + token_names(token_layers)
    shard_size = config.shard_size
    if token_layers and not (entry / "done.json").exists():
        shard_size = _check_token_size(encoder, split, entry, token_layers, config, log)
    shards = _shard_ranges(len(split), shard_size)
    rank, world = _rank_world()
    done = entry / "done.json"
    damage = entry_damage(entry, names) if done.exists() else []
    if damage:
        log(f"feature store: entry {entry} is damaged ({'; '.join(damage[:3])}{'; ...' if len(damage) > 3 else ''}); discarding it and recomputing its features")
        if world > 1:
            torch.distributed.barrier()  # every rank has read the entry before rank 0 removes it
        if rank == 0:
            with FileLock(str(entry / ".lock-finish")):
                _discard(entry)
        if world > 1:
            torch.distributed.barrier()
    cache_hit = done.exists()
    if not done.exists():
        # One writer per entry and rank: a second run on the same cache waits instead of corrupting it,
        # then finds the entry done (or resumes it, if the first run was killed).
        with FileLock(str(entry / f".lock-rank{rank}")):
            if not done.exists():
                (entry / "meta.json").write_text(json.dumps({**meta, "encoder": encoder.name, "dataset": split.spec}, indent=2))
                todo = [i for i, _ in enumerate(shards) if i % world == rank and not (entry / f"shard-{i:05d}.valid.npy").exists()]
                if todo:
                    _extract_shards(encoder, split, entry, shards, todo, resolved, names, config, log, token_layers)
                if world == 1:
                    _finish(entry, shards, names, len(split))
    if world > 1:
        # Every rank meets at both barriers whatever it found, so ranks can never wait on each other forever.
        torch.distributed.barrier()
        if rank == 0:
            with FileLock(str(entry / ".lock-finish")):
                if not done.exists():
                    _finish(entry, shards, names, len(split))
        torch.distributed.barrier()
    features = _open(entry, key, names, meta)
    features.meta["cache_hit"] = cache_hit  # served whole from the store, nothing extracted
    if cache_hit:
        log(f"features of {encoder.name} on {split.spec}/{split.split}: cache hit ({entry})")
    _validate(features, encoder, split, config, log)
    return features


def _extract_shards(encoder, split, entry, shards, todo, layers, names, config, log, patch_layers=()) -> None:
    from tqdm import tqdm

    indices = [index for shard in todo for index in shards[shard]]
    dataset = _TransformedSplit(split, _uint8_transform(encoder.preprocess), encoder.preprocess.resolution, indices)
    loader = DataLoader(dataset, batch_size=config.batch_size, num_workers=config.workers, pin_memory=config.device.startswith("cuda"), persistent_workers=False)
    mean, std = encoder.preprocess.mean, encoder.preprocess.std
    fn = _feature_fn(encoder, layers, config, patch_layers)
    bar = tqdm(total=len(indices), desc=f"features {encoder.name} / {split.split}", unit="img", disable=not config.progress, dynamic_ncols=True)
    pending: dict[str, list[torch.Tensor]] = {name: [] for name in names + ["labels", "valid", "index"]}
    shard_iter = iter(todo)
    current = next(shard_iter)
    started = time.perf_counter()
    batches = _prefetch(loader, config.device) if config.decode == "cpu" else _device_decoded(split, indices, encoder.preprocess, config)
    for images, labels, index, valid in batches:
        images = _normalize_on_device(images, valid, mean, std, config.device)
        batch = _batch_features(encoder, fn, images, config)
        for name in names:  # blocks run only for their patch tokens have pooled features nobody asked for
            pending[name].append(batch[name])
        pending["labels"].append(labels)
        pending["valid"].append(valid)
        pending["index"].append(index)
        bar.update(len(labels))
        # Flush every shard that is complete: a kill loses at most the shard in progress.
        while current is not None and sum(len(v) for v in pending["index"]) >= len(shards[current]):
            pending = _flush(entry, current, shards[current], pending, names)
            current = next(shard_iter, None)
    bar.close()
    elapsed = time.perf_counter() - started
    log(f"extracted {len(indices)} images of {split.spec}/{split.split} with {encoder.name} in {elapsed:.1f} s ({len(indices) / max(elapsed, 1e-9):.1f} img/s)")


# fp16 keeps about 3 significant digits (relative error <= 2**-11 for normal values); a row whose
# round trip errs by more than this has under- or overflowed and is stored in fp32 instead.
FP16_MAX_ROW_ERROR = 1e-3


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


def _flush(entry: Path, shard: int, rows: range, pending: dict, names: list[str]) -> dict:
    size = len(rows)
    joined = {name: torch.cat(values) for name, values in pending.items()}
    if not torch.equal(joined["index"][:size], torch.tensor(list(rows))):
        raise RuntimeError(f"feature store: shard {shard} received images out of order")
    for name in names:
        values = joined[name][:size].numpy()
        _atomic_save(entry / f"shard-{shard:05d}.{name}.npy", values.astype(storage_dtype(values)))
    _atomic_save(entry / f"shard-{shard:05d}.labels.npy", joined["labels"][:size].numpy().astype(np.int64))
    # ``valid`` is written last: its presence marks the shard complete.
    _atomic_save(entry / f"shard-{shard:05d}.valid.npy", joined["valid"][:size].numpy().astype(np.uint8))
    return {name: [value[size:]] for name, value in joined.items()}


def _finish(entry: Path, shards: list[range], names: list[str], total: int) -> None:
    """Merge the shards into one file per array, streamed (one shard in memory at a time), mark the
    entry done, then drop the shards: readers memory-map a single file instead of concatenating."""
    missing = [i for i in range(len(shards)) if not (entry / f"shard-{i:05d}.valid.npy").exists()]
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
    tmp = entry / "done.json.tmp"
    tmp.write_text(json.dumps({"shards": len(shards), "images": total, "features": names, "dtypes": {n: dtypes[n] for n in names}, "shapes": shapes}))
    os.replace(tmp, entry / "done.json")
    for shard_file in entry.glob("shard-*.npy"):
        shard_file.unlink()


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset in bytes) from a ``.npy`` file's header; ValueError when it has none."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(handle)
        return tuple(shape), dtype, handle.tell()


def entry_damage(entry: Path, names: Sequence[str]) -> list[str]:
    """What is wrong with a finished store entry, checked against its ``done.json`` without reading the
    data: every array file present, a readable ``.npy`` header, as many rows as images, the recorded
    dtype and shape, and exactly the bytes that shape needs (a truncated or padded file is caught).
    Empty when the entry is sound."""
    try:
        done = json.loads((entry / "done.json").read_text())
        total = int(done["images"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"done.json unreadable ({type(err).__name__})"]
    dtypes = done.get("dtypes", {}) if isinstance(done.get("dtypes"), dict) else {}
    shapes = done.get("shapes", {}) if isinstance(done.get("shapes"), dict) else {}
    problems = []
    for name in [*names, "labels", "valid"]:
        path = entry / f"{name}.npy"
        try:
            size = path.stat().st_size
            shape, dtype, offset = _npy_header(path)
        except FileNotFoundError:
            problems.append(f"{path.name} missing")
            continue
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            problems.append(f"{path.name} has no readable array header ({type(err).__name__})")
            continue
        expected_bytes = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not shape or shape[0] != total:
            problems.append(f"{path.name} holds {shape[0] if shape else 0} rows, done.json says {total} images")
        elif name in shapes and list(shape) != list(shapes[name]):
            problems.append(f"{path.name} has shape {list(shape)}, done.json says {shapes[name]}")
        elif name in dtypes and str(dtype) != dtypes[name]:
            problems.append(f"{path.name} is {dtype}, done.json says {dtypes[name]}")
        elif size != expected_bytes:
            problems.append(f"{path.name} is {size} bytes, its shape {list(shape)} needs {expected_bytes}")
    return problems


def _discard(entry: Path) -> None:
    """Remove a damaged entry's results (``done.json`` first, so no reader takes it for finished), keeping ``meta.json``."""
    (entry / "done.json").unlink(missing_ok=True)
    for path in entry.glob("*.npy"):
        path.unlink()


def _open(entry: Path, key: str, names: list[str], meta: dict) -> FeatureSet:
    def load(name: str) -> np.ndarray:
        return np.load(entry / f"{name}.npy", mmap_mode="r")

    return FeatureSet(key, {name: load(name) for name in names}, load("labels"), load("valid").astype(bool), dict(meta))


def unreadable_items(features: FeatureSet, split: ImageSplit, limit: int = 20) -> str:
    """The item ids (file paths for folder datasets) of the images that could not be read, for messages."""
    bad = np.flatnonzero(~features.valid)
    shown = ", ".join(split.item_id(int(index)) for index in bad[:limit])
    return shown + (f" (and {len(bad) - limit} more)" if len(bad) > limit else "")


def _validate(features: FeatureSet, encoder: Encoder, split: ImageSplit, config: ExtractionConfig, log=print) -> None:
    total = len(features.valid)
    if not features.bad_count:
        return
    names = unreadable_items(features, split)
    if features.bad_count > config.max_bad_fraction * total:
        raise FeatureError(
            f"{features.bad_count} of {total} images of {split.spec}/{split.split} could not be read "
            f"(more than {config.max_bad_fraction:.0%}): {names}; fix or remove these files"
        )
    log(f"skipped {features.bad_count} unreadable image(s) of {split.spec}/{split.split}: {names}")


def iter_cached(cache_dir: str | os.PathLike) -> Iterator[dict]:
    """Meta of every finished entry in a cache directory (for housekeeping)."""
    for meta in Path(cache_dir).glob("*/meta.json"):
        if (meta.parent / "done.json").exists():
            yield json.loads(meta.read_text())
