"""timm: any timm architecture name (ViTs incl. SigLIP/SigLIP2, DINOv2, CLIP ViTs; ConvNets)."""
from __future__ import annotations

import contextlib
import inspect
import sys
from unittest import mock
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..base import EncoderOutput, LayerTokens, PreprocessConfig, grid_from_tokens, token_stride
from ..family import EncoderFamily, register_family
from ..layouts import RemapReport, drop_keys


# The functions timm's checkpoint_filter_fn converters call to change an embedding's grid.
RESAMPLERS = ("resample_abs_pos_embed", "resample_patch_embed", "resample_abs_pos_embed_nhwc")


def _recording(name: str, function, found: list[str]):
    def wrapper(tensor, *args, **kwargs):
        result = function(tensor, *args, **kwargs)
        if tuple(result.shape) != tuple(tensor.shape):
            found.append(f"{name}: {tuple(tensor.shape)} -> {tuple(result.shape)}")
        return result

    return wrapper


def _is_token_model(model: nn.Module) -> bool:
    return "return_prefix_tokens" in inspect.signature(model.forward_intermediates).parameters


def _vit_features(model: nn.Module, images: torch.Tensor, layers: Sequence[int]) -> EncoderOutput:
    final, intermediates = model.forward_intermediates(
        images, indices=list(layers) or [len(model.blocks) - 1], return_prefix_tokens=True, norm=False, output_fmt="NLC"
    )
    prefix_count = model.num_prefix_tokens
    pooled = model.forward_head(final, pre_logits=True)
    patches = final[:, prefix_count:]
    grid = grid_from_tokens(patches.shape[1], tuple(images.shape[-2:]), token_stride(model))
    empty = final.new_zeros(final.shape[0], 0, final.shape[-1])
    # timm returns (tokens, prefix) pairs only for models that have prefix tokens.
    pairs = [item if isinstance(item, tuple) else (item, empty) for item in intermediates]
    per_layer = {index: LayerTokens(prefix=prefix, patches=tokens) for index, (tokens, prefix) in zip(layers, pairs)}
    return EncoderOutput(pooled, patches, grid, final[:, :prefix_count], per_layer if layers else {})


def _conv_features(model: nn.Module, images: torch.Tensor, layers: Sequence[int]) -> EncoderOutput:
    final, intermediates = model.forward_intermediates(images, indices=list(layers) or [len(model.feature_info) - 1], output_fmt="NCHW")
    pooled = model.forward_head(final, pre_logits=True)
    batch, dim, height, width = final.shape
    empty = final.new_zeros(batch, 0, dim)

    def tokens(feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.flatten(2).transpose(1, 2)

    per_layer = {index: LayerTokens(prefix=feature_map.new_zeros(batch, 0, feature_map.shape[1]), patches=tokens(feature_map)) for index, feature_map in zip(layers, intermediates)}
    return EncoderOutput(pooled, tokens(final), (height, width), empty, per_layer if layers else {})


@register_family
class TimmFamily(EncoderFamily):
    name = "timm"

    def build(self, arch: str, options: Mapping[str, Any], hf_config=None) -> nn.Module:
        import timm

        if arch not in timm.list_models() and not timm.is_model(arch):
            raise ValueError(f"unknown timm architecture {arch!r}; list them with `python -c \"import timm; print(timm.list_models('*vit*'))\"`")
        return timm.create_model(arch, pretrained=False, num_classes=0, **dict(options))

    def preprocess(self, model: nn.Module, arch: str, options: Mapping[str, Any], source=None) -> PreprocessConfig:
        from timm.data import resolve_model_data_config

        config = resolve_model_data_config(model)
        resolution = config["input_size"][-1]
        img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
        if img_size:
            resolution = img_size[-1] if isinstance(img_size, (tuple, list)) else img_size
        interpolation = config.get("interpolation", "bicubic")
        return PreprocessConfig(int(resolution), tuple(config["mean"]), tuple(config["std"]), interpolation if interpolation in ("bicubic", "bilinear", "nearest") else "bicubic")

    def adapter(self, model: nn.Module):
        return _vit_features if _is_token_model(model) else _conv_features

    def structure(self, model: nn.Module) -> tuple[int, int, int]:
        if _is_token_model(model):
            return len(model.blocks), int(model.num_prefix_tokens), int(model.num_features)
        return len(model.feature_info), 0, int(model.num_features)

    def remap(self, state: dict[str, torch.Tensor], model: nn.Module, report: RemapReport) -> dict[str, torch.Tensor]:
        # The encoder is built without a classifier; a classifier in the checkpoint is dropped and counted.
        classifier = model.pretrained_cfg.get("classifier") or "head"
        names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
        expected = model.state_dict()
        prefixes = [f"{name}." for name in names if not any(key.startswith(f"{name}.") for key in expected)]
        return drop_keys(state, prefixes, "classifier_head", report) if prefixes else state

    def converters(self, model: nn.Module):
        module = sys.modules.get(type(model).__module__)
        filter_fn = getattr(module, "checkpoint_filter_fn", None)
        if filter_fn is None:
            return []

        def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            # timm's converters silently resample position and patch embeddings to the model's grid;
            # record every such call that changes a shape, so the loader can refuse or report it.
            convert.resampled = []
            with contextlib.ExitStack() as stack:
                for name in RESAMPLERS:
                    original = getattr(module, name, None)
                    if callable(original):
                        stack.enter_context(mock.patch.object(module, name, _recording(name, original, convert.resampled)))
                return dict(filter_fn(dict(state), model))

        convert.resampled = []
        return [(f"{module.__name__}.checkpoint_filter_fn", convert)]
