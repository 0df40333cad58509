"""Tiny randomly initialised models of every family, built in-process (never downloaded)."""
from __future__ import annotations

import pytest
import torch

TIMM_VIT = ("vit_base_patch16_siglip_224", {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32})
TIMM_CLS_VIT = ("vit_small_patch16_224", {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32})
TIMM_CONV = ("resnet10t", {})
OPEN_CLIP = ("ViT-B-32", {
    "embed_dim": 16,
    "vision_cfg": {"width": 64, "layers": 2, "image_size": 32, "patch_size": 16, "head_width": 64},
    "text_cfg": {"width": 32, "layers": 1, "heads": 1, "context_length": 8, "vocab_size": 100},
})


def timm_model(arch: str, options: dict, num_classes: int = 0) -> torch.nn.Module:
    import timm

    torch.manual_seed(1)
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, **options).eval()


def open_clip_model() -> torch.nn.Module:
    import open_clip

    torch.manual_seed(2)
    return open_clip.create_model(OPEN_CLIP[0], pretrained=None, **OPEN_CLIP[1]).eval()


def hf_vision_model(kind: str) -> torch.nn.Module:
    import transformers

    torch.manual_seed(3)
    common = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 16}
    if kind == "siglip":
        return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(image_size=32, **common)).eval()
    if kind == "siglip2":
        return transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(num_patches=4, **common)).eval()
    return transformers.CLIPVisionModel(transformers.CLIPVisionConfig(image_size=32, **common)).eval()


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 3, 32, 32)
