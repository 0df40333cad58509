"""ItemDataset decodes each image file once (within its byte budget) and gives the same tensors as decoding anew."""
from __future__ import annotations

import torch

from train.data import ItemDataset, read_items


def test_images_are_decoded_once_within_the_budget_and_tensors_do_not_change(shapes_files, monkeypatch):
    from PIL import Image

    items, _ = read_items(shapes_files["preferences"])
    transform = lambda img: torch.from_numpy(__import__("numpy").asarray(img.resize((16, 16)), dtype="float32")).permute(2, 0, 1)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    cached, uncached = ItemDataset(items, transform), ItemDataset(items, transform, cache_bytes=0)
    for _ in range(2):
        for index in range(len(items)):
            assert torch.equal(cached[index][1], uncached[index][1])
    distinct = len({item.image for item in items})
    assert distinct < len(items)  # several questions per image
    assert len(opened) == distinct + 2 * len(items)  # cached: once per file; uncached: every visit
    small = ItemDataset(items, transform, cache_bytes=2 * 3 * 16 * 16 * 4)  # room for two images
    for index in range(len(items)):
        small[index]
    assert len(small._cache) == 2
