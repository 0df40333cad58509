"""open_clip: the image tower of an open_clip architecture (e.g. ``ViT-B-32``), weights from a local file."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..base import EncoderOutput, LayerTokens, PreprocessConfig, grid_from_tokens
from ..family import EncoderFamily, register_family
from ..layouts import RemapReport, extract_open_clip_visual


def _features(visual: nn.Module, images: torch.Tensor, layers: Sequence[int]) -> EncoderOutput:
    last = len(visual.transformer.resblocks) - 1
    indices = sorted(set(layers) | {last})
    out = visual.forward_intermediates(images, indices=indices, output_fmt="NLC", output_extra_tokens=True)
    by_index = {index: LayerTokens(prefix=prefix, patches=tokens) for index, tokens, prefix in zip(indices, out["image_intermediates"], out["image_intermediates_prefix"])}
    final = by_index[last]
    patches = visual.ln_post(final.patches)
    grid = grid_from_tokens(patches.shape[1], tuple(images.shape[-2:]), visual.patch_size)
    return EncoderOutput(out["image_features"], patches, grid, visual.ln_post(final.prefix), {i: by_index[i] for i in layers})


@register_family
class OpenClipFamily(EncoderFamily):
    name = "open_clip"

    def build(self, arch: str, options: Mapping[str, Any], hf_config=None) -> nn.Module:
        import open_clip

        if arch not in open_clip.list_models():
            raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
        visual = open_clip.create_model(arch, pretrained=None, **dict(options)).visual
        if not hasattr(visual, "transformer"):
            raise ValueError(f"open_clip architecture {arch!r} has a non-ViT image tower; use the timm family for it")
        return visual

    def preprocess(self, model: nn.Module, arch: str, options: Mapping[str, Any], source=None) -> PreprocessConfig:
        cfg = getattr(model, "preprocess_cfg", {}) or {}
        size = cfg.get("size", model.image_size)
        size = size[-1] if isinstance(size, (tuple, list)) else size
        mean = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        return PreprocessConfig(int(size), mean, std, cfg.get("interpolation", "bicubic"))

    def adapter(self, model: nn.Module):
        return _features

    def structure(self, model: nn.Module) -> tuple[int, int, int]:
        return len(model.transformer.resblocks), 1, int(model.transformer.width)

    def remap(self, state: dict[str, torch.Tensor], model: nn.Module, report: RemapReport) -> dict[str, torch.Tensor]:
        return extract_open_clip_visual(state, report)
