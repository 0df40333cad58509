"""An MLLM directory as --encoder: its vision tower, or its encoder + projector outputs (--features projector)."""
import pytest
import torch

from benchmarks.loading import load_run_encoder
from encoders import CheckpointError, EncoderSpec
from tests.train.conftest import shapes_files, tiny_lm_dir, tiny_mllm_dir  # noqa: F401  (fixtures)


def test_mllm_directory_as_encoder_and_as_projector_features(tiny_mllm_dir):
    from train.mllm import load_mllm

    spec, encoder = load_run_encoder(EncoderSpec(checkpoint=str(tiny_mllm_dir)), "encoder")
    assert spec.mllm == str(tiny_mllm_dir) and spec.checkpoint.endswith("encoder.safetensors")
    spec, projected = load_run_encoder(EncoderSpec(checkpoint=str(tiny_mllm_dir)), "projector")
    mllm = load_mllm(tiny_mllm_dir)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        output = projected.features(images)
        expected = mllm.visual_tokens(images)
    assert torch.allclose(output.patch_tokens, expected, atol=1e-6)
    assert output.pooled.shape == (2, mllm.projector.fc2.out_features) and output.grid == mllm.grid
    assert projected.weights_hash != encoder.weights_hash  # the projector's weights are part of the identity


def test_projector_features_without_an_mllm_are_refused(tiny_mllm_dir):
    with pytest.raises(CheckpointError, match="needs an MLLM"):
        load_run_encoder(EncoderSpec(checkpoint=str(tiny_mllm_dir / "encoder.safetensors")), "projector")
