"""Tiny project checkpoints and in-memory splits for the spine's tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from encoders import load_encoder, save_encoder_checkpoint
from imagesets import BadImageError, ImageSplit
from tests.imagesets.conftest import ade_root  # noqa: F401  (a fixture, for the seg suite's tests)

TINY_ARCH = "vit_small_patch16_224"
TINY_OPTIONS = {"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2}


def write_tiny_checkpoint(path, seed: int = 0, nan: bool = False):
    import timm

    torch.manual_seed(seed)
    state = timm.create_model(TINY_ARCH, pretrained=False, num_classes=0, **TINY_OPTIONS).state_dict()
    if nan:
        # Finite weights that overflow to Inf in the forward pass: the weights check passes, the features check must not.
        state["norm.weight"].fill_(3e38)
        state["norm.bias"].fill_(3e38)
    return save_encoder_checkpoint(state, {"family": "timm", "arch": TINY_ARCH, "options": TINY_OPTIONS}, path)


@pytest.fixture
def tiny_encoder(tmp_path):
    return load_encoder(write_tiny_checkpoint(tmp_path / "tiny.safetensors"))


class ListSplit(ImageSplit):
    """Coloured squares; ``bad`` indices raise BadImageError, ``explode_at`` raises KeyboardInterrupt."""

    def __init__(self, n: int, bad=(), explode_at: int | None = None, split: str = "train") -> None:
        self.spec, self.split, self.name = f"list:n={n}", split, "list"
        self.classes = ["a", "b"]
        self.seg_classes = []
        self.labels = np.arange(n, dtype=np.int64) % 2
        self.fingerprint = f"list{n}-{split}"
        self.bad, self.explode_at = set(bad), explode_at

    def load_image(self, index: int) -> Image.Image:
        if index == self.explode_at:
            raise KeyboardInterrupt("simulated kill")
        if index in self.bad:
            raise BadImageError(f"/data/img{index}.jpg", "truncated")
        value = 40 + 150 * int(self.labels[index]) + index % 7
        return Image.new("RGB", (40, 40), (value, 255 - value, (index * 13) % 255))

    def item_id(self, index: int) -> str:
        return str(index)
