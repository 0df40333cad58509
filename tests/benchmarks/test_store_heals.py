"""The feature store heals: a damaged finished entry is found on open (against its done.json), discarded,
logged and recomputed to identical values; and files swapped or rewritten in place are never served from
a stale entry."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from benchmarks.features import ExtractionConfig, entry_damage, extract_features
from imagesets import open_split
from tests.benchmarks.conftest import ListSplit
from tests.imagesets.conftest import write_image

CONFIG = ExtractionConfig(batch_size=4, shard_size=8, progress=False)
SPLIT = ListSplit(20)


def _arrays(features) -> dict[str, np.ndarray]:
    return {**{name: np.array(value) for name, value in features.arrays.items()}, "labels": np.array(features.labels), "valid": np.array(features.valid)}


def _halve(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pad(path):
    with open(path, "ab") as handle:
        handle.write(b"\0" * 64)


def _fewer_rows(path):
    np.save(path, np.load(path)[:-1])


def _other_dtype(path):
    np.save(path, np.load(path).astype(np.float64))


def _garbage_header(path):
    data = bytearray(path.read_bytes())
    data[:16] = b"not a numpy file"
    path.write_bytes(bytes(data))


DAMAGE = {
    "cls halved": ("cls.npy", _halve, "cls.npy is"),
    "mean deleted": ("mean.npy", lambda path: path.unlink(), "mean.npy missing"),
    "L0.cls padded": ("L0.cls.npy", _pad, "bytes, its shape"),
    "labels short a row": ("labels.npy", _fewer_rows, "labels.npy holds 19 rows, done.json says 20 images"),
    "mean re-saved as float64": ("mean.npy", _other_dtype, "mean.npy is float64"),
    "valid header garbage": ("valid.npy", _garbage_header, "valid.npy has no readable array header"),
    "done.json not JSON": ("done.json", lambda path: path.write_text("{half"), "done.json unreadable"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_entry_is_discarded_logged_and_recomputed_bit_for_bit(tmp_path, tiny_encoder, damage):
    file_name, harm, cause = DAMAGE[damage]
    cache = tmp_path / "cache"
    first = extract_features(tiny_encoder, SPLIT, cache, layers=[0], config=CONFIG)
    original = _arrays(first)
    other = extract_features(tiny_encoder, SPLIT, cache, layers=None, config=CONFIG)  # another entry of the same cache
    other_files = {path.name: path.read_bytes() for path in (cache / other.key).iterdir()}
    entry = cache / first.key
    del first
    harm(entry / file_name)
    assert entry_damage(entry, list(original)[:-2]) != []
    lines: list[str] = []
    healed = extract_features(tiny_encoder, SPLIT, cache, layers=[0], config=CONFIG, log=lines.append)
    assert not healed.meta["cache_hit"]
    assert any(f"entry {entry} is damaged" in line and cause in line and "recomputing" in line for line in lines), lines
    recomputed = _arrays(healed)
    assert recomputed.keys() == original.keys()
    for name, values in original.items():
        assert recomputed[name].dtype == values.dtype and np.array_equal(recomputed[name], values), name
    assert entry_damage(entry, list(original)[:-2]) == []
    assert {path.name: path.read_bytes() for path in (cache / other.key).iterdir()} == other_files  # nothing else touched
    lines.clear()
    again = extract_features(tiny_encoder, SPLIT, cache, layers=[0], config=CONFIG, log=lines.append)
    assert again.meta["cache_hit"] and not any("is damaged" in line for line in lines), lines


def test_an_entry_written_before_shapes_were_recorded_is_still_checked(tmp_path, tiny_encoder):
    cache = tmp_path / "cache"
    features = extract_features(tiny_encoder, SPLIT, cache, config=CONFIG)
    entry = cache / features.key
    done = json.loads((entry / "done.json").read_text())
    del done["shapes"]
    (entry / "done.json").write_text(json.dumps(done))
    assert entry_damage(entry, ["cls", "mean"]) == []
    del features
    _halve(entry / "cls.npy")
    assert any("cls.npy is" in problem for problem in entry_damage(entry, ["cls", "mean"]))


@pytest.fixture
def swap_root(tmp_path):
    """JPEGs padded to one size (decoders stop at the end-of-image marker), all with one modification time,
    as files unpacked from an archive with second-resolution times often are."""
    root = tmp_path / "imagenet"
    paths = [write_image(root / split / wnid / name, size=(24, 20), seed=seed, fmt="JPEG")
             for split in ("train", "val") for wnid, name, seed in (("n01", "a.JPEG", 1), ("n01", "b.JPEG", 2), ("n02", "c.JPEG", 3), ("n02", "d.JPEG", 4))]
    size = max(path.stat().st_size for path in paths)
    for path in paths:
        path.write_bytes(path.read_bytes().ljust(size, b"\0"))
        os.utime(path, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    return root


def _swap(first, second):
    parking = first.with_name("parking.tmp")
    os.rename(first, parking)
    os.rename(second, first)
    os.rename(parking, second)


def test_two_same_size_images_swapped_with_mv_are_not_served_from_the_cache(swap_root, tmp_path, tiny_encoder):
    spec = f"imagenet:root={swap_root}"
    a, c = swap_root / "train" / "n01" / "a.JPEG", swap_root / "train" / "n02" / "c.JPEG"
    before = extract_features(tiny_encoder, open_split(spec, "train"), tmp_path / "cache", config=CONFIG)
    cls_before = np.array(before.arrays["cls"])
    stats = (a.stat().st_size, a.stat().st_mtime_ns, c.stat().st_size, c.stat().st_mtime_ns)
    fingerprint = open_split(spec, "train").fingerprint
    _swap(a, c)
    assert (a.stat().st_size, a.stat().st_mtime_ns, c.stat().st_size, c.stat().st_mtime_ns) == stats  # size and mtime cannot tell
    swapped = open_split(spec, "train")
    assert swapped.fingerprint == fingerprint  # the portable content identity of result rows is unchanged...
    lines: list[str] = []
    after = extract_features(tiny_encoder, swapped, tmp_path / "cache", config=CONFIG, log=lines.append)
    assert after.key != before.key and not after.meta["cache_hit"]  # ...but the store sees the swap
    cls_after = np.array(after.arrays["cls"])
    order = [swapped.item_id(i) for i in range(len(swapped))]
    index_a, index_c = order.index("train/n01/a.JPEG"), order.index("train/n02/c.JPEG")
    assert np.array_equal(cls_after[index_a], cls_before[index_c]) and np.array_equal(cls_after[index_c], cls_before[index_a])
    assert not np.array_equal(cls_after[index_a], cls_before[index_a])
    fresh = extract_features(tiny_encoder, swapped, tmp_path / "fresh-cache", config=CONFIG)
    assert np.array_equal(np.array(fresh.arrays["cls"]), cls_after)


def test_a_rewrite_in_place_with_the_mtime_put_back_makes_a_new_entry(swap_root, tmp_path, tiny_encoder):
    spec = f"imagenet:root={swap_root}"
    target = swap_root / "train" / "n01" / "b.JPEG"
    before = extract_features(tiny_encoder, open_split(spec, "train"), tmp_path / "cache", config=CONFIG)
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF  # in the padding: same picture, and the same size and modification time
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = extract_features(tiny_encoder, open_split(spec, "train"), tmp_path / "cache", config=CONFIG)
    assert after.key != before.key and not after.meta["cache_hit"]


def test_an_untouched_folder_is_still_a_cache_hit_and_a_copy_keeps_the_row_fingerprint(swap_root, tmp_path, tiny_encoder):
    spec = f"imagenet:root={swap_root}"
    first = extract_features(tiny_encoder, open_split(spec, "train"), tmp_path / "cache", config=CONFIG)
    again = extract_features(tiny_encoder, open_split(spec, "train"), tmp_path / "cache", config=CONFIG)
    assert again.key == first.key and again.meta["cache_hit"]
    copy = tmp_path / "copy"
    shutil.copytree(swap_root, copy)  # copy2 keeps modification times
    copied = open_split(f"imagenet:root={copy}", "train")
    assert copied.fingerprint == open_split(spec, "train").fingerprint
    assert copied.local_fingerprint != open_split(spec, "train").local_fingerprint


def test_ade20k_annotations_swapped_are_seen_too(ade_root):
    spec = f"ade20k:root={ade_root}"
    before = open_split(spec, "train").local_fingerprint
    annotations = ade_root / "annotations" / "training"
    first, second = sorted(annotations.iterdir())
    _swap(first, second)
    assert open_split(spec, "train").local_fingerprint != before


def test_generated_datasets_keep_their_store_keys(tiny_encoder):
    from benchmarks.features import store_key

    split = open_split("shapes:n=8:seed=0:size=32", "train")
    assert split.local_fingerprint == ""
    _, meta = store_key(tiny_encoder, split, [], "fp32")
    assert "local_fingerprint" not in meta
