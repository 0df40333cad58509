"""The token_shuffle positive control: same pooled features, patch tokens moved on the grid, its own identity."""
from __future__ import annotations

import pytest
import torch

from encoders import (
    CheckpointError,
    load_encoder,
    make_token_shuffled,
    save_encoder_checkpoint,
)

OPTIONS = {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.fixture
def original(tmp_path):
    import timm

    import encoders.families.conv_stem_vit  # noqa: F401  (registers vit_convstem_demo)

    torch.manual_seed(0)
    model = timm.create_model("vit_convstem_demo", num_classes=0, **OPTIONS)
    return save_encoder_checkpoint(model.state_dict(), {"family": "timm", "arch": "vit_convstem_demo", "options": OPTIONS}, tmp_path / "orig.safetensors")


def test_token_shuffle_keeps_what_each_token_computes_and_moves_it_on_the_grid(original, tmp_path):
    control = load_encoder(make_token_shuffled(original, tmp_path / "shuffled.safetensors", seed=3))
    base = load_encoder(original)
    assert control.weights_hash != base.weights_hash and control.options["control"] == {"kind": "token_shuffle", "seed": 3}
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = base.features(images, layers=[0]), control.features(images, layers=[0])
    assert torch.allclose(a.pooled, b.pooled, atol=1e-5)  # the CLS token sees the same set of tokens
    order = control.model.patch_drop.order
    assert not torch.equal(order, torch.arange(order.numel()))
    assert torch.allclose(a.patch_tokens[:, order], b.patch_tokens, atol=1e-5)  # slot p holds patch order[p]
    assert not torch.allclose(a.patch_tokens, b.patch_tokens, atol=1e-3)


def test_an_unknown_control_in_a_checkpoint_is_a_clear_error(original, tmp_path):
    import safetensors.torch

    state = safetensors.torch.load_file(str(original))
    bad = save_encoder_checkpoint(state, {"family": "timm", "arch": "vit_convstem_demo", "options": {**OPTIONS, "control": {"kind": "mirror"}}}, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="unknown control 'mirror'"):
        load_encoder(bad)
