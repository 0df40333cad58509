"""Features of a split from the store, extracting what is missing: :func:`extract_features` runs the input
pipeline (``pipeline``) through the forward (``forward``) into the on-disk store (``store``), shard by shard.

A killed run resumes at the first missing shard; a second run on the same cache waits on a file lock
instead of writing the same entry; a damaged finished entry is discarded and recomputed. Under torchrun,
rank r extracts the shards with ``index % world_size == r`` into the same entry and rank 0 merges them.
Patch tokens' size on disk is printed before extraction and refused when the disk has less room.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from encoders import Encoder
from imagesets import IMAGE_FILES, ImageSplit

from .config import DECODES, ExtractionConfig, FeatureError
from .forward import (
    feature_forward,
    feature_names,
    precision_context,
    token_grid,
    token_names,
)
from .pipeline import image_batches
from .store import (
    DONE_FILE,
    FeatureSet,
    discard_entry,
    entry_damage,
    merge_shards,
    open_entry,
    shard_done,
    store_key,
    write_meta,
    write_shard,
)

TOKEN_SHARD_BYTES = 256 * 1024**2  # fp32 tokens held per shard before it is written


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
    _check_config(config, split)
    key, meta = store_key(encoder, split, resolved, config.precision, token_layers, config.decode)
    entry = Path(cache_dir) / key
    entry.mkdir(parents=True, exist_ok=True)
    names = feature_names(resolved) + token_names(token_layers)
    shard_size = config.shard_size
    if token_layers and not (entry / DONE_FILE).exists():
        shard_size = _check_token_size(encoder, split, entry, token_layers, config, log)
    shards = _shard_ranges(len(split), shard_size)
    rank, world = _rank_world()
    done = entry / DONE_FILE
    _discard_if_damaged(entry, names, rank, world, log)
    cache_hit = done.exists()
    if not done.exists():
        # One writer per entry and rank: a second run on the same cache waits instead of corrupting it,
        # then finds the entry done (or resumes it, if the first run was killed).
        with FileLock(str(entry / f".lock-rank{rank}")):
            if not done.exists():
                write_meta(entry, {**meta, "encoder": encoder.name, "dataset": split.spec})
                todo = [i for i, _ in enumerate(shards) if i % world == rank and not shard_done(entry, i)]
                if todo:
                    _extract_shards(encoder, split, entry, shards, todo, resolved, names, config, log, token_layers)
                if world == 1:
                    merge_shards(entry, shards, names, len(split))
    if world > 1:
        # Every rank meets at both barriers whatever it found, so ranks can never wait on each other forever.
        torch.distributed.barrier()
        if rank == 0:
            with FileLock(str(entry / ".lock-finish")):
                if not done.exists():
                    merge_shards(entry, shards, names, len(split))
        torch.distributed.barrier()
    features = open_entry(entry, key, names, meta)
    features.meta["cache_hit"] = cache_hit  # served whole from the store, nothing extracted
    if cache_hit:
        log(f"features of {encoder.name} on {split.spec}/{split.split}: cache hit ({entry})")
    _validate(features, split, config, log)
    return features


def _check_config(config: ExtractionConfig, split: ImageSplit) -> None:
    """An unknown precision or decode mode, or ``gpu`` decoding of a split without image files, is refused
    before anything is written."""
    precision_context(config.precision, config.device)
    if config.decode not in DECODES:
        raise ValueError(f"unknown decode mode {config.decode!r}; use one of {', '.join(DECODES)}")
    if config.decode == "gpu" and IMAGE_FILES not in type(split).CAPABILITIES:
        raise ValueError(f"--decode gpu reads image files, but {split.spec} has none (use it with imagenet:root=...; or --decode cpu)")


def _discard_if_damaged(entry: Path, names: list[str], rank: int, world: int, log) -> None:
    """A finished entry whose files do not match its ``done.json`` is discarded (by rank 0, once every rank has read it)."""
    damage = entry_damage(entry, names) if (entry / DONE_FILE).exists() else []
    if not damage:
        return
    log(f"feature store: entry {entry} is damaged ({'; '.join(damage[:3])}{'; ...' if len(damage) > 3 else ''}); discarding it and recomputing its features")
    if world > 1:
        torch.distributed.barrier()  # every rank has read the entry before rank 0 removes it
    if rank == 0:
        with FileLock(str(entry / ".lock-finish")):
            discard_entry(entry)
    if world > 1:
        torch.distributed.barrier()


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


def _extract_shards(encoder, split, entry, shards, todo, layers, names, config, log, patch_layers=()) -> None:
    from tqdm import tqdm

    indices = [index for shard in todo for index in shards[shard]]
    forward = feature_forward(encoder, layers, config, patch_layers)
    bar = tqdm(total=len(indices), desc=f"features {encoder.name} / {split.split}", unit="img", disable=not config.progress, dynamic_ncols=True)
    pending: dict[str, list[torch.Tensor]] = {name: [] for name in names + ["labels", "valid", "index"]}
    shard_iter = iter(todo)
    current = next(shard_iter)
    started = time.perf_counter()
    for images, labels, index, valid in image_batches(split, indices, encoder.preprocess, config):
        batch = forward(images)
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


def _flush(entry: Path, shard: int, rows: range, pending: dict, names: list[str]) -> dict:
    """Write shard ``shard`` (the first ``len(rows)`` pending rows, which must be its images in order);
    returns what remains pending."""
    size = len(rows)
    joined = {name: torch.cat(values) for name, values in pending.items()}
    if not torch.equal(joined["index"][:size], torch.tensor(list(rows))):
        raise RuntimeError(f"feature store: shard {shard} received images out of order")
    write_shard(entry, shard, {name: joined[name][:size].numpy() for name in names}, joined["labels"][:size].numpy(), joined["valid"][:size].numpy())
    return {name: [value[size:]] for name, value in joined.items()}


def unreadable_items(features: FeatureSet, split: ImageSplit, limit: int = 20) -> str:
    """The item ids (file paths for folder datasets) of the images that could not be read, for messages."""
    bad = np.flatnonzero(~features.valid)
    shown = ", ".join(split.item_id(int(index)) for index in bad[:limit])
    return shown + (f" (and {len(bad) - limit} more)" if len(bad) > limit else "")


def _validate(features: FeatureSet, split: ImageSplit, config: ExtractionConfig, log=print) -> None:
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
