"""Tests for probes.gradcam: captum Grad-CAM on encoder blocks and the localization scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders import load_encoder, save_encoder_checkpoint
from probes.gradcam import (
    AttributionError,
    block_modules,
    grad_cam,
    localization_scores,
)

ARCH = "vit_small_patch16_224"


def tiny_encoder(tmp_path, img_size=32, reg_tokens: int = 0, name="tiny"):
    import timm

    options = {"img_size": img_size, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}
    if reg_tokens:
        options["reg_tokens"] = reg_tokens
    torch.manual_seed(0)
    state = timm.create_model(ARCH, pretrained=False, num_classes=0, **options).state_dict()
    return load_encoder(save_encoder_checkpoint(state, {"family": "timm", "arch": ARCH, "options": options}, tmp_path / f"{name}.safetensors"))


def random_head(encoder, n_classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(encoder.embed_dim, n_classes, generator=generator)
    return lambda pooled: pooled @ weight


# ------------------------------------------------------------------ scores on hand-built maps


def _box_and_mask(size=16, box=(2, 2, 6, 6)):
    x0, y0, x1, y1 = box
    region = torch.zeros(1, size, size, dtype=torch.bool)
    region[0, y0:y1, x0:x1] = True
    return region


def test_peak_inside_box_scores_pointing_1_and_outside_0():
    region = _box_and_mask()
    inside = torch.zeros(1, 16, 16)
    inside[0, 3, 4] = 5.0
    outside = torch.zeros(1, 16, 16)
    outside[0, 12, 12] = 5.0
    assert localization_scores(inside, region, region).pointing.tolist() == [1.0]
    assert localization_scores(outside, region, region).pointing.tolist() == [0.0]
    assert localization_scores(inside, region, region).energy[0] == pytest.approx(1.0)
    assert localization_scores(outside, region, region).energy[0] == pytest.approx(0.0)


def test_uniform_map_energy_equals_box_area_fraction():
    region = _box_and_mask(size=16, box=(1, 3, 9, 7))  # 8 x 4 = 32 of 256 pixels
    for grid in (16, 4):  # at full size and upsampled from a coarse grid
        scores = localization_scores(torch.full((1, grid, grid), 0.7), region, region)
        assert scores.energy[0] == pytest.approx(32 / 256)


def test_top_region_matching_the_mask_has_iou_1_and_zero_maps_score_0():
    region = _box_and_mask(size=10, box=(0, 0, 5, 2))  # 10 of 100 pixels
    maps = torch.where(region, 2.0, 0.1).float()
    scores = localization_scores(maps, region, region, topk=0.10)
    assert scores.iou[0] == pytest.approx(1.0)
    zero = localization_scores(torch.zeros(1, 10, 10), region, region)
    assert zero.zero.tolist() == [1.0] and zero.pointing.tolist() == [0.0] and zero.energy.tolist() == [0.0] and zero.iou.tolist() == [0.0]


# ------------------------------------------------------------------ maps


def reference_grad_cam(model_forward, block, images, targets, prefix, grid):
    """pytorch-grad-cam's GradCAM (jacobgil/pytorch-grad-cam, base_cam.py + grad_cam.py +
    activations_and_gradients.py), restated: a forward hook keeps reshape_transform(output) and a tensor
    hook its gradient; loss = sum of the target logits; weights = mean of grads over (H, W); cam =
    ReLU(sum_c weights * activations); scale_cam_image min-max normalises each map."""
    h, w = grid
    saved = {}

    def reshape_transform(tensor):  # the README's ViT reshape_transform, with the prefix count given
        result = tensor[:, prefix:, :].reshape(tensor.size(0), h, w, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    def save_activation(module, inputs, output):
        output = output[0] if isinstance(output, tuple) else output  # transformers layers may return tuples
        saved["activation"] = reshape_transform(output).cpu().detach()

        def store_grad(grad):
            saved["gradient"] = reshape_transform(grad).cpu().detach()

        output.register_hook(store_grad)

    handle = block.register_forward_hook(save_activation)
    try:
        outputs = model_forward(images)
        loss = sum(output[target] for target, output in zip(targets.tolist(), outputs))
        loss.backward()
    finally:
        handle.remove()
    activations, grads = saved["activation"].numpy(), saved["gradient"].numpy()
    weights = np.mean(grads, axis=(2, 3))
    cam = np.maximum((weights[:, :, None, None] * activations).sum(axis=1), 0)
    result = []
    for img in cam:
        img = img - np.min(img)
        result.append(img / (1e-7 + np.max(img)))
    return np.float32(result)


def _normalised(maps: torch.Tensor) -> np.ndarray:
    array = maps.numpy().astype(np.float64)
    array = array - array.min(axis=(1, 2), keepdims=True)
    return array / (1e-7 + array.max(axis=(1, 2), keepdims=True))


@pytest.mark.parametrize("layer", [-1, -2])
def test_maps_equal_pytorch_grad_cam_up_to_normalisation(tmp_path, layer):
    # Grad-CAM at block i explains block i's input: pytorch-grad-cam gets the same tensor as the
    # output of block i - 1.
    encoder = tiny_encoder(tmp_path)
    score = random_head(encoder)
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    maps = grad_cam(encoder, images, targets, [layer], score)[encoder.num_layers + layer]
    assert maps.shape == (6, 4, 4) and (maps >= 0).all()
    expected = reference_grad_cam(lambda x: score(encoder.features(x).pooled), block_modules(encoder)[layer - 1], images, targets, encoder.num_prefix_tokens, (4, 4))
    assert np.abs(_normalised(maps) - expected).max() < 1e-4
    assert maps.flatten(1).std(dim=1).gt(0).all()  # not a degenerate constant map


def test_batched_maps_equal_one_image_at_a_time(tmp_path):
    encoder = tiny_encoder(tmp_path)
    score = random_head(encoder)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([3, 1, 4, 1])
    batched = grad_cam(encoder, images, targets, [-1, 0], score)
    for i in range(4):
        single = grad_cam(encoder, images[i : i + 1], targets[i : i + 1], [-1, 0], score)
        for index in batched:
            torch.testing.assert_close(batched[index][i : i + 1], single[index], rtol=1e-4, atol=1e-6)


def test_register_tokens_are_removed_by_count_and_non_square_grids_use_the_encoders_grid(tmp_path):
    encoder = tiny_encoder(tmp_path, img_size=(32, 48), reg_tokens=2, name="reg")
    assert encoder.num_prefix_tokens == 3  # CLS + 2 registers
    score = random_head(encoder)
    images = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    maps = grad_cam(encoder, images, torch.tensor([0, 1]), [-1], score)[encoder.num_layers - 1]
    assert maps.shape == (2, 4, 6) and maps.flatten(1).std(dim=1).gt(0).all()
    expected = reference_grad_cam(lambda x: score(encoder.features(x).pooled), block_modules(encoder)[-2], images, torch.tensor([0, 1]), 3, (4, 6))
    assert np.abs(_normalised(maps) - expected).max() < 1e-4


@pytest.mark.parametrize("family", ["hf-siglip", "open_clip"])
def test_other_families_siglip_without_prefix_tokens_and_open_clip(tmp_path, family):
    from tests.encoders.conftest import OPEN_CLIP, hf_vision_model, open_clip_model

    if family == "hf-siglip":
        hf_vision_model("siglip").save_pretrained(tmp_path / "hf")
        encoder = load_encoder(tmp_path / "hf")
        assert encoder.num_prefix_tokens == 0
    else:
        torch.save(open_clip_model().state_dict(), tmp_path / "oc.pt")
        encoder = load_encoder(tmp_path / "oc.pt", arch=f"open_clip:{OPEN_CLIP[0]}", options=OPEN_CLIP[1])
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    weight = torch.randn(encoder.features(images[:1]).pooled.shape[1], 4, generator=torch.Generator().manual_seed(5))
    score = lambda pooled: pooled @ weight
    targets = torch.tensor([0, 3, 1])
    maps = grad_cam(encoder, images, targets, [-1], score)[encoder.num_layers - 1]
    assert maps.shape == (3, 2, 2) and maps.flatten(1).std(dim=1).gt(0).all()
    expected = reference_grad_cam(lambda x: score(encoder.features(x).pooled), block_modules(encoder)[-2], images, targets, encoder.num_prefix_tokens, (2, 2))
    assert np.abs(_normalised(maps) - expected).max() < 1e-4


def test_a_block_that_does_not_exist_lists_the_valid_range(tmp_path):
    encoder = tiny_encoder(tmp_path)
    with pytest.raises(AttributionError, match=r"block 7 does not exist.*3 blocks.*-3\.\.2"):
        grad_cam(encoder, torch.randn(1, 3, 32, 32), torch.tensor([0]), [7], random_head(encoder))


def test_nan_maps_name_the_encoder_block_and_image(tmp_path):
    encoder = tiny_encoder(tmp_path)
    images = torch.randn(2, 3, 32, 32)
    images[1, :, :8, :8] = float("nan")  # one patch of the second image: its tokens, and only its, go NaN
    with pytest.raises(AttributionError, match=r"tiny: Grad-CAM map of block 2 is NaN/Inf for image val/0000001 \(1 of 2"):
        grad_cam(encoder, images, torch.tensor([0, 1]), [-1], random_head(encoder), item_ids=["val/0000000", "val/0000001"])
