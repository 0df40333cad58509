"""Tiny MLLMs and shapes-world training files, built in seconds on CPU."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}


def write_tiny_encoder(path: Path, seed: int = 0, options: dict | None = None) -> Path:
    import timm

    from encoders import save_encoder_checkpoint

    torch.manual_seed(seed)
    options = options or TINY_VIT
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **options)
    return save_encoder_checkpoint(model.state_dict(), {"family": "timm", "arch": "vit_small_patch16_224", "options": options}, path)


@pytest.fixture(scope="session")
def shapes_files(tmp_path_factory) -> dict[str, Path]:
    from train.data import write_shapes_data

    return write_shapes_data("shapes:n=8:seed=0:size=64", "train", tmp_path_factory.mktemp("shapes_data"))


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, shapes_files) -> Path:
    from train.demo import _corpus
    from train.mllm import IMAGE_TOKEN
    from train.tiny_lm import TinyLMConfig, build_tiny_lm

    config = TinyLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64)
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "lm", _corpus([shapes_files["preferences"], shapes_files["captions"]]), config, extra_special=[IMAGE_TOKEN])


@pytest.fixture(scope="session")
def tiny_mllm_dir(tmp_path_factory, tiny_lm_dir) -> Path:
    from train.mllm import build_mllm, save_mllm

    folder = tmp_path_factory.mktemp("mllm")
    encoder = write_tiny_encoder(folder / "encoder.safetensors")
    return save_mllm(build_mllm(encoder, tiny_lm_dir, visual_layer=-2, seed=0), folder / "mllm0")


from tests.train.llava_reference import llava_dirs, next_dir  # noqa: E402,F401  (tiny Llava / LLaVA-NeXT fixtures)
