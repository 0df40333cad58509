from __future__ import annotations

import numpy as np

from imagesets import open_split


def test_digits_load_offline_as_rgb_with_disjoint_stratified_splits():
    splits = {name: open_split("digits", name) for name in ("train", "val", "test")}
    sizes = {name: len(s) for name, s in splits.items()}
    assert sum(sizes.values()) == 1797
    assert abs(sizes["train"] / 1797 - 0.6) < 0.01 and abs(sizes["val"] / 1797 - 0.2) < 0.01
    ids = [set(s.item_id(i) for i in range(len(s))) for s in splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    for s in splits.values():
        counts = np.bincount(s.labels, minlength=10)
        assert counts.min() > 0 and counts.max() - counts.min() <= 0.1 * len(s)  # stratified
        assert s.classes == [str(d) for d in range(10)] and s.seg_classes == []
        assert s.seg_mask(0) is None and s.boxes(0) == [] and s.vqa_items(0) == []
    img = splits["train"].load_image(0)
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    assert (arr[..., 0] == arr[..., 1]).all() and arr.max() > 200  # grey strokes scaled to 0..255
    assert len({s.fingerprint for s in splits.values()}) == 3


def test_digits_are_deterministic_and_sized():
    a, b = open_split("digits", "val"), open_split("digits:size=16", "val")
    assert a.fingerprint == open_split("digits", "val").fingerprint != b.fingerprint
    assert b.load_image(3).size == (16, 16)
    assert open_split("digits:seed=1", "val").labels.tolist() != a.labels.tolist() or (
        open_split("digits:seed=1", "val").item_id(0) != a.item_id(0)
    )
