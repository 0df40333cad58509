"""``vit_convstem_demo``: a small ViT whose patch embedding is a 3-layer convolutional stem (stride 8),
registered in timm's model registry, so the timm family builds it like any timm ViT.

ViTs trained from scratch on a few thousand images barely learn object shape with a linear patchify;
a convolutional stem fixes that at almost no cost (Xiao et al. 2021, "Early convolutions help
transformers see better"). The demo lineage's original encoder uses it: everything after the stem
(blocks, CLS token, ``forward_intermediates``) is timm's own ``VisionTransformer``.
"""
from __future__ import annotations

from functools import partial

from timm.layers import HybridEmbed
from timm.models import VisionTransformer, register_model
from torch import nn

ARCH = "vit_convstem_demo"


def conv_stem(in_chans: int = 3, width: int = 96) -> nn.Sequential:
    """Three 3x3 stride-2 convolutions with GELU: (B, 3, H, W) -> (B, width, H/8, W/8)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, width // 4, 3, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(width // 4, width // 2, 3, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
    )


if ARCH not in __import__("timm").list_models(ARCH):

    @register_model
    def vit_convstem_demo(pretrained: bool = False, **kwargs) -> VisionTransformer:
        """Options as timm's ViTs (``img_size``, ``embed_dim``, ``depth``, ``num_heads``, ...); the stem
        has stride 8, so a 64 px input gives an 8 x 8 grid of patch tokens."""
        if pretrained:
            raise ValueError(f"{ARCH} has no pretrained weights; load a checkpoint instead")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm.create_model's own arguments
            kwargs.pop(key, None)
        settings = {"img_size": 64, "embed_dim": 96, "depth": 4, "num_heads": 3, **kwargs}
        stem = conv_stem(settings.get("in_chans", 3), settings["embed_dim"])
        model = VisionTransformer(embed_layer=partial(HybridEmbed, backbone=stem), patch_size=1, **settings)
        model.pretrained_cfg = {
            "architecture": ARCH, "input_size": (3, settings["img_size"], settings["img_size"]), "interpolation": "bicubic",
            "crop_pct": 1.0, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "classifier": "head", "num_classes": model.num_classes,
        }
        return model
