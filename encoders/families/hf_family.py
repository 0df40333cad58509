"""hf: transformers SigLIP / SigLIP2 (NaFlex) / CLIP vision towers from a local model directory."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..base import EncoderOutput, LayerTokens, PreprocessConfig
from ..family import EncoderFamily, register_family
from ..layouts import RemapReport

# model_type in config.json -> vision model class; full (image+text) configs keep the tower in vision_config.
VISION_CLASSES = {
    "siglip_vision_model": "SiglipVisionModel",
    "siglip": "SiglipVisionModel",
    "siglip2_vision_model": "Siglip2VisionModel",
    "siglip2": "Siglip2VisionModel",
    "clip_vision_model": "CLIPVisionModel",
    "clip": "CLIPVisionModel",
}
CONFIG_CLASSES = {"SiglipVisionModel": "SiglipVisionConfig", "Siglip2VisionModel": "Siglip2VisionConfig", "CLIPVisionModel": "CLIPVisionConfig"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _vision_config(config: Mapping[str, Any]) -> dict[str, Any]:
    return dict(config.get("vision_config", config))


def _patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, h*w, p*p*C) in the order Siglip2ImageProcessor produces."""
    batch, channels, height, width = images.shape
    h, w = height // patch, width // patch
    x = images.reshape(batch, channels, h, patch, w, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(batch, h * w, patch * patch * channels)


def _features(model: nn.Module, images: torch.Tensor, layers: Sequence[int]) -> EncoderOutput:
    config = model.config
    grid = (images.shape[-2] // config.patch_size, images.shape[-1] // config.patch_size)
    if type(model).__name__ == "Siglip2VisionModel":
        tokens = grid[0] * grid[1]
        out = model(
            pixel_values=_patchify(images, config.patch_size),
            pixel_attention_mask=torch.ones(images.shape[0], tokens, dtype=torch.long, device=images.device),
            spatial_shapes=torch.tensor([grid] * images.shape[0], device=images.device),
            output_hidden_states=True,
        )
    else:
        out = model(pixel_values=images, output_hidden_states=True)
    prefix_count = 1 if type(model).__name__ == "CLIPVisionModel" else 0
    hidden = out.hidden_states  # embeddings, then one entry per block
    per_layer = {i: LayerTokens(hidden[i + 1][:, :prefix_count], hidden[i + 1][:, prefix_count:]) for i in layers}
    final = out.last_hidden_state
    pooled = out.pooler_output if out.pooler_output is not None else final[:, prefix_count:].mean(dim=1)
    return EncoderOutput(pooled, final[:, prefix_count:], grid, final[:, :prefix_count], per_layer)


PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
# Options a project checkpoint of a tower embeds (an imported MLLM's): the tower's config and its image
# processor's settings; they rebuild the model and its preprocessing, and are no config keyword.
EMBEDDED_OPTIONS = ("hf_config", "processor")
RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}


def read_processor_config(folder: str | Path) -> dict[str, Any]:
    """The image processor's settings in a model directory: ``preprocessor_config.json``, or the
    ``image_processor`` entry of a processor's ``processor_config.json`` (transformers 5); {} if neither."""
    for name in PROCESSOR_FILES:
        path = Path(folder) / name
        if path.is_file():
            data = json.loads(path.read_text())
            return dict(data.get("image_processor", data)) if name == "processor_config.json" else data
    return {}


def preprocess_from_processor(model: nn.Module, arch: str, processor: Mapping[str, Any]) -> PreprocessConfig:
    """The tower's eval preprocessing from its image processor's settings (mean, std, resample, size;
    a ``shortest_edge`` size with a crop gives the crop fraction); the tower's defaults where unset.
    Encoder suites always resize the shorter side and centre-crop (PreprocessConfig ``shorter``)."""
    clip = arch == "CLIPVisionModel"
    mean, std = (CLIP_MEAN, CLIP_STD) if clip else ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    interpolation = "bicubic" if clip else "bilinear"
    # NaFlex SigLIP2 has no fixed image size: use the square grid of its position-embedding table.
    side = int(round(getattr(model.config, "num_patches", 256) ** 0.5))
    resolution = int(getattr(model.config, "image_size", 0) or side * model.config.patch_size)
    crop_pct = 1.0
    size = processor.get("size") or {}
    crop = processor.get("crop_size") if processor.get("do_center_crop", True) else None
    if isinstance(size, dict) and "shortest_edge" in size and isinstance(crop, dict) and "height" in crop:
        resolution, crop_pct = int(crop["height"]), int(crop["height"]) / int(size["shortest_edge"])
    elif isinstance(size, dict) and "height" in size:
        resolution = int(size["height"])
    names = {code: name for name, code in RESAMPLE.items()}
    interpolation = names.get(processor.get("resample"), interpolation)
    return PreprocessConfig(resolution, tuple(processor.get("image_mean", mean)), tuple(processor.get("image_std", std)), interpolation, crop_pct)


@register_family
class HuggingFaceFamily(EncoderFamily):
    name = "hf"

    def arch_from_hf_config(self, config: Mapping[str, Any]) -> str:
        model_type = config.get("model_type", "")
        if model_type not in VISION_CLASSES:
            raise ValueError(f"config.json has model_type {model_type!r}; supported: {sorted(VISION_CLASSES)}")
        return VISION_CLASSES[model_type]

    def build(self, arch: str, options: Mapping[str, Any], hf_config: Mapping[str, Any] | None = None) -> nn.Module:
        """The tower of ``arch`` from a model directory's config.json (``hf_config``) or, for a project
        checkpoint of a tower (an imported MLLM's), the config it embeds (``options['hf_config']``)."""
        import transformers

        if arch not in CONFIG_CLASSES:
            raise ValueError(f"unknown hf vision architecture {arch!r}; supported: {sorted(CONFIG_CLASSES)}")
        embedded = options.get("hf_config")
        options = {key: value for key, value in options.items() if key not in EMBEDDED_OPTIONS}
        source = hf_config if hf_config is not None else embedded
        if source is None:
            raise ValueError("the hf family builds from a model directory's config.json; pass a Hugging Face directory as the checkpoint")
        config = getattr(transformers, CONFIG_CLASSES[arch])(**{k: v for k, v in _vision_config(source).items() if k != "model_type"}, **options)
        return getattr(transformers, arch)(config)

    def preprocess(self, model: nn.Module, arch: str, options: Mapping[str, Any], source: Path | None = None) -> PreprocessConfig:
        processor = options.get("processor") or (read_processor_config(source) if source else {})
        return preprocess_from_processor(model, arch, processor)

    def adapter(self, model: nn.Module):
        return _features

    def structure(self, model: nn.Module) -> tuple[int, int, int]:
        config = model.config
        return int(config.num_hidden_layers), 1 if type(model).__name__ == "CLIPVisionModel" else 0, int(config.hidden_size)

    def remap(self, state: dict[str, torch.Tensor], model: nn.Module, report: RemapReport) -> dict[str, torch.Tensor]:
        prefix = "vision_model."
        if any(key.startswith(prefix) for key in state):
            # A full image-text checkpoint: keep the vision tower, count the text tower and logit scale/bias.
            others = [key for key in state if not key.startswith(prefix)]
            report.drop("text_tower", len(others))
            state = {key: value for key, value in state.items() if key.startswith(prefix)}
        # transformers versions disagree on whether the vision model's own keys carry "vision_model.".
        model_prefixed = any(key.startswith(prefix) for key in model.state_dict())
        state_prefixed = bool(state) and all(key.startswith(prefix) for key in state)
        if state_prefixed and not model_prefixed:
            report.stripped_prefixes.append(prefix)
            return {key[len(prefix):]: value for key, value in state.items()}
        if model_prefixed and not state_prefixed and not any(key.startswith(prefix) for key in state):
            report.layouts.append("hf-unprefixed")
            return {prefix + key: value for key, value in state.items()}
        return state
