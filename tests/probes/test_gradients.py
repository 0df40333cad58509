"""Tests for probes.gradients: SFT vs DPO gradient maps of a tiny MLLM, and the map scores."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from probes.gradients import Objectives, map_scores, patch_cover
from probes.gradients import gradient_maps as _gradient_maps
from train.losses import dpo_loss, sft_loss

QUESTIONS = ["What colour is the circle?", "Is there a star in the image?", "What colour is the ring?"]
CHOSEN = ["red", "yes", "blue"]
REJECTED = ["green", "no", "white"]


@pytest.fixture(scope="module")
def tiny_mllm(tmp_path_factory):
    import timm

    from encoders import load_encoder, save_encoder_checkpoint
    from train.mllm import IMAGE_TOKEN, build_mllm
    from train.tiny_lm import TinyLMConfig, build_tiny_lm

    folder = tmp_path_factory.mktemp("mllm")
    options = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}
    torch.manual_seed(0)
    state = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **options).state_dict()
    encoder = load_encoder(save_encoder_checkpoint(state, {"family": "timm", "arch": "vit_small_patch16_224", "options": options}, folder / "enc.safetensors"))
    corpus = QUESTIONS + CHOSEN + REJECTED
    lm = build_tiny_lm(folder / "lm", corpus, TinyLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64), extra_special=[IMAGE_TOKEN])
    return build_mllm(encoder, lm).eval()


def gradient_maps(*args, **kwargs):
    """The probe with the training code's own losses, as the grad suite calls it."""
    return _gradient_maps(*args, objectives=Objectives(sft_loss, dpo_loss), **kwargs)


def images(n=3, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _normalised(maps):
    flat = maps.flatten(1)
    return flat / flat.sum(dim=1, keepdim=True)


def test_maps_have_the_grid_shape_and_sft_and_dpo_differ(tiny_mllm):
    result = gradient_maps(tiny_mllm, images(), QUESTIONS, CHOSEN, REJECTED)
    assert set(result.maps) == {(loss, site) for loss in ("sft", "dpo") for site in ("projector", "encoder")}
    for maps in result.maps.values():
        assert maps.shape == (3, 4, 4) and (maps >= 0).all() and (maps.flatten(1).sum(1) > 0).all()
    # with the policy as its own reference every DPO loss is log 2
    assert torch.allclose(result.losses["dpo"], torch.full((3,), math.log(2.0)), atol=1e-5)
    for site in ("projector", "encoder"):
        assert (_normalised(result.maps[("sft", site)]) - _normalised(result.maps[("dpo", site)])).abs().max() > 1e-3


def test_dpo_scoring_only_the_chosen_answer_with_the_policy_as_reference_equals_sft_after_normalisation(tiny_mllm):
    result = gradient_maps(tiny_mllm, images(), QUESTIONS, CHOSEN, REJECTED, score_rejected=False)
    for site in ("projector", "encoder"):
        torch.testing.assert_close(_normalised(result.maps[("sft", site)]), _normalised(result.maps[("dpo", site)]), rtol=1e-4, atol=1e-7)
        assert not torch.allclose(result.maps[("sft", site)], result.maps[("dpo", site)])  # equal only up to scale


def test_a_different_reference_changes_the_dpo_maps_not_the_sft_maps(tiny_mllm):
    reference = copy.deepcopy(tiny_mllm)
    with torch.no_grad():
        for param in reference.projector.parameters():
            param.add_(0.5 * torch.randn_like(param))
    own = gradient_maps(tiny_mllm, images(), QUESTIONS, CHOSEN, REJECTED)
    other = gradient_maps(tiny_mllm, images(), QUESTIONS, CHOSEN, REJECTED, reference=reference)
    torch.testing.assert_close(own.maps[("sft", "projector")], other.maps[("sft", "projector")])
    assert not torch.allclose(own.losses["dpo"], other.losses["dpo"])
    assert not torch.allclose(own.maps[("dpo", "projector")], other.maps[("dpo", "projector")])


def test_batched_maps_equal_one_item_at_a_time(tiny_mllm):
    batch = gradient_maps(tiny_mllm, images(), QUESTIONS, CHOSEN, REJECTED)
    for i in range(3):
        single = gradient_maps(tiny_mllm, images()[i : i + 1], QUESTIONS[i : i + 1], CHOSEN[i : i + 1], REJECTED[i : i + 1])
        for key in batch.maps:
            torch.testing.assert_close(batch.maps[key][i : i + 1], single.maps[key], rtol=1e-4, atol=1e-8)


def test_scores_of_hand_built_maps():
    region = torch.zeros(1, 8, 8, dtype=torch.bool)
    region[0, :4, :4] = True  # the top-left token of a 2x2 grid, fully covered
    cover = patch_cover(region, (2, 2))
    assert cover.flatten().tolist() == [1.0, 0.0, 0.0, 0.0]
    peaked = torch.tensor([[[3.0, 0.0], [0.0, 0.0]]])
    uniform = torch.full((1, 2, 2), 0.25)
    outside = torch.tensor([[[0.0, 0.0], [0.0, 2.0]]])
    scores = map_scores(torch.cat([peaked, uniform, outside, torch.zeros(1, 2, 2)]), cover.repeat(4, 1, 1))
    np.testing.assert_allclose(scores.inside[:3], [1.0, 0.25, 0.0])
    np.testing.assert_allclose(scores.entropy[:3], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(scores.gini[:3], [0.75, 0.0, 0.75], atol=1e-12)  # one of n tokens: (n - 1) / n
    assert scores.zero.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert np.isnan(scores.inside[3]) and np.isnan(scores.entropy[3]) and np.isnan(scores.gini[3])


def test_nan_gradients_name_the_encoder_loss_site_and_item(tiny_mllm):
    from probes.gradcam import AttributionError

    broken = copy.deepcopy(tiny_mllm)
    with torch.no_grad():
        broken.projector.fc2.bias[0] = float("nan")
    with pytest.raises(AttributionError, match=r"enc: sft gradient map at the projector output is NaN/Inf for item val/0000000"):
        gradient_maps(broken, images(), QUESTIONS, CHOSEN, REJECTED, item_ids=["val/0000000", "val/0000001", "val/0000002"])
