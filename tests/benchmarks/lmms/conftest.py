"""Fixtures: a tiny MLLM built offline (4-block 64 px ViT + 2-layer Qwen2 over the shapes vocabulary)
and lmms-eval results files in the exact on-disk layout lmms-eval writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = "shapes:n=40:seed=0"
VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def build_tiny_mllm(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised MLLM directory (encoder + projector + tiny LM) written with save_mllm."""
    import timm
    import torch

    from benchmarks.datasets import open_split
    from encoders import save_encoder_checkpoint
    from train.mllm import IMAGE_TOKEN, build_mllm, save_mllm
    from train.tiny_lm import TinyLMConfig, build_tiny_lm

    split = open_split(DATA, "val")
    corpus = [f"{item.question} {item.chosen} {item.rejected}" for index in range(len(split)) for item in split.vqa_items(index)]
    lm = build_tiny_lm(folder / "lm_src", corpus, TinyLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64, seed=seed), extra_special=[IMAGE_TOKEN])
    torch.manual_seed(seed)
    state = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **VIT).state_dict()
    encoder = save_encoder_checkpoint(state, {"family": "timm", "arch": "vit_small_patch16_224", "options": VIT}, folder / "encoder.safetensors")
    return save_mllm(build_mllm(encoder, lm, seed=seed), folder / "mllm")


@pytest.fixture(scope="session")
def tiny_mllm(tmp_path_factory) -> Path:
    return build_tiny_mllm(tmp_path_factory.mktemp("mllm"))
