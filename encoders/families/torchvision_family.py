"""torchvision: ResNets and VisionTransformers from torchvision.models, weights from a local file."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..base import EncoderOutput, LayerTokens, PreprocessConfig
from ..family import IMAGENET_MEAN, IMAGENET_STD, EncoderFamily, register_family
from ..layouts import RemapReport, drop_keys


def _resnet_features(model: nn.Module, images: torch.Tensor, layers: Sequence[int]) -> EncoderOutput:
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    stages = []
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = stage(x)
        stages.append(x)
    batch, dim, height, width = x.shape
    tokens = x.flatten(2).transpose(1, 2)
    per_layer = {i: LayerTokens(stages[i].new_zeros(batch, 0, stages[i].shape[1]), stages[i].flatten(2).transpose(1, 2)) for i in layers}
    return EncoderOutput(torch.flatten(model.avgpool(x), 1), tokens, (height, width), x.new_zeros(batch, 0, dim), per_layer)


def _vit_features(model: nn.Module, images: torch.Tensor, layers: Sequence[int]) -> EncoderOutput:
    x = model._process_input(images)
    x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = model.encoder.dropout(x + model.encoder.pos_embedding)
    per_layer = {}
    for index, block in enumerate(model.encoder.layers):
        x = block(x)
        if index in layers:
            per_layer[index] = LayerTokens(x[:, :1], x[:, 1:])
    x = model.encoder.ln(x)
    side = images.shape[-1] // model.patch_size
    return EncoderOutput(x[:, 0], x[:, 1:], (images.shape[-2] // model.patch_size, side), x[:, :1], per_layer)


@register_family
class TorchvisionFamily(EncoderFamily):
    name = "torchvision"

    def build(self, arch: str, options: Mapping[str, Any], hf_config=None) -> nn.Module:
        from torchvision import models

        if arch not in models.list_models():
            raise ValueError(f"unknown torchvision architecture {arch!r}; see torchvision.models.list_models()")
        model = models.get_model(arch, weights=None, **dict(options))
        if isinstance(model, models.ResNet):
            model.fc = nn.Identity()
        elif isinstance(model, models.VisionTransformer):
            model.heads = nn.Identity()
        else:
            raise ValueError(f"torchvision architecture {arch!r} is not supported: use a ResNet or a VisionTransformer (or the timm family)")
        return model

    def preprocess(self, model: nn.Module, arch: str, options: Mapping[str, Any], source=None) -> PreprocessConfig:
        return PreprocessConfig(int(getattr(model, "image_size", 224)), IMAGENET_MEAN, IMAGENET_STD, "bilinear")

    def adapter(self, model: nn.Module):
        from torchvision import models

        return _resnet_features if isinstance(model, models.ResNet) else _vit_features

    def structure(self, model: nn.Module) -> tuple[int, int, int]:
        from torchvision import models

        if isinstance(model, models.ResNet):
            return 4, 0, int(model.inplanes)
        return len(model.encoder.layers), 1, int(model.hidden_dim)

    def remap(self, state: dict[str, torch.Tensor], model: nn.Module, report: RemapReport) -> dict[str, torch.Tensor]:
        return drop_keys(state, ("fc.", "heads."), "classifier_head", report)
