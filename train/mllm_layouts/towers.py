"""Vision towers of imported MLLMs: transformers SigLIP / CLIP vision models as project Encoders, and the
built-in table of the towers the study names (the LLaVA-NeXT layout stores only the tower's hub name).

The table holds the transformers ``SiglipVisionConfig`` / ``CLIPVisionConfig`` fields of each named tower
(from their published ``config.json``); anything else needs ``--vision-config DIR`` (a local copy of the
tower, or just its config.json), or an ``mm_vision_tower`` that is itself a local directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from encoders import Encoder, PreprocessConfig, RemapReport, weights_hash

SIGLIP_SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16}
SIGLIP_LARGE = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}
SIGLIP_BASE = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
SIGLIP_COMMON = {"model_type": "siglip_vision_model", "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "num_channels": 3}
# hub name -> vision config (fixed-resolution SigLIP 2 checkpoints use the SigLIP architecture).
KNOWN_TOWERS: dict[str, dict[str, Any]] = {
    "google/siglip-so400m-patch14-384": {**SIGLIP_COMMON, **SIGLIP_SO400M, "image_size": 384, "patch_size": 14},
    "google/siglip2-so400m-patch14-384": {**SIGLIP_COMMON, **SIGLIP_SO400M, "image_size": 384, "patch_size": 14},
    "google/siglip2-so400m-patch16-384": {**SIGLIP_COMMON, **SIGLIP_SO400M, "image_size": 384, "patch_size": 16},
    "google/siglip2-so400m-patch16-512": {**SIGLIP_COMMON, **SIGLIP_SO400M, "image_size": 512, "patch_size": 16},
    "google/siglip2-large-patch16-384": {**SIGLIP_COMMON, **SIGLIP_LARGE, "image_size": 384, "patch_size": 16},
    "google/siglip2-large-patch16-512": {**SIGLIP_COMMON, **SIGLIP_LARGE, "image_size": 512, "patch_size": 16},
    "google/siglip2-base-patch16-384": {**SIGLIP_COMMON, **SIGLIP_BASE, "image_size": 384, "patch_size": 16},
    "google/siglip-base-patch16-384": {**SIGLIP_COMMON, **SIGLIP_BASE, "image_size": 384, "patch_size": 16},
    "openai/clip-vit-large-patch14-336": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                          "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
                                          "projection_dim": 768},
}
VISION_CONFIGS = {"siglip_vision_model": "SiglipVisionConfig", "clip_vision_model": "CLIPVisionConfig"}
VISION_MODELS = {"siglip_vision_model": "SiglipVisionModel", "clip_vision_model": "CLIPVisionModel"}


def vision_config(data: Mapping[str, Any]):
    """A transformers SigLIP / CLIP vision config from a dict (a full SigLIP / CLIP config's ``vision_config``
    is taken); ValueError for other towers."""
    import transformers

    data = dict(data)
    if data.get("model_type") in ("siglip", "clip", "siglip2") and "vision_config" in data:
        data = {**data["vision_config"], "model_type": f"{data['model_type']}_vision_model"}
    kind = data.get("model_type", "")
    if kind not in VISION_CONFIGS:
        raise ValueError(f"vision tower of model_type {kind!r}: the importers read SigLIP and CLIP towers ({', '.join(VISION_CONFIGS)})")
    return getattr(transformers, VISION_CONFIGS[kind])(**{key: value for key, value in data.items() if key != "model_type"})


def build_tower(config, dtype: torch.dtype | None = None) -> nn.Module:
    """An uninitialised transformers vision model of ``config`` (its weights are read next)."""
    import transformers

    from .weights import build_empty

    return build_empty(lambda: getattr(transformers, VISION_MODELS[config.model_type])(config), dtype)


def tower_encoder(tower: nn.Module, *, name: str, checkpoint: Path, layout: str, processor: Mapping[str, Any], report: RemapReport) -> Encoder:
    """The project :class:`Encoder` of a loaded transformers tower, through the ``hf`` encoder family (its
    feature call, its structure, its preprocessing read from the image processor's settings ``processor``),
    so the tower reads the same as one saved with ``save_pretrained`` and passed as ``--encoder``."""
    from encoders import FAMILIES
    from encoders.families.hf_family import preprocess_from_processor

    family = FAMILIES.get("hf")
    arch = type(tower).__name__
    num_layers, num_prefix, dim = family.structure(tower)
    preprocess: PreprocessConfig = preprocess_from_processor(tower, arch, processor)
    # The options rebuild this tower from a project checkpoint (train.mllm.save_mllm's encoder.safetensors).
    options = {"hf_config": tower.config.to_dict(), "processor": dict(processor)}
    return Encoder(tower.eval(), name=name, family="hf", arch=arch, preprocess=preprocess, adapter=family.adapter(tower), num_layers=num_layers,
                   num_prefix_tokens=num_prefix, embed_dim=dim, weights_hash=weights_hash(tower.state_dict()), checkpoint=str(checkpoint),
                   checkpoint_format=layout, remap=report, options=options)


def route_tower_key(rest: str, tower_keys: set[str]) -> str | None:
    """A tower tensor's name (after the MLLM's tower prefix) as the tower model names it: transformers 4.x
    saved SigLIP / CLIP towers under ``vision_model.``, transformers 5 names them without it."""
    if rest in tower_keys:
        return rest
    if rest.startswith("vision_model.") and rest[len("vision_model."):] in tower_keys:
        return rest[len("vision_model."):]
    if "vision_model." + rest in tower_keys:
        return "vision_model." + rest
    return None
