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
    norm1_module,
    top_region,
    upsample,
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


def _sparse_maps(n=6, grid=16, size=64, positive=0.02, seed=0):
    """Grad-CAM-like maps: about ``positive`` of the tokens > 0 (the rest clipped by the ReLU), upsampled."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.rand(n, grid, grid, generator=generator)
    tokens = torch.where(torch.rand(n, grid, grid, generator=generator) < positive, tokens, torch.zeros(()))
    tokens[:, grid // 2, grid // 2] = 0.5  # at least one positive token per map
    return upsample(tokens, (size, size))


def _blobs(n=6, size=64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    boxes = torch.zeros_like(masks)
    for i in range(n):
        x0, y0 = (int(v) for v in torch.randint(0, size // 2, (2,), generator=generator))
        masks[i, y0 : y0 + size // 3, x0 : x0 + size // 4] = True
        boxes[i, y0 : y0 + size // 3, x0 : x0 + size // 4] = True
        boxes[i, y0 : y0 + size // 3 + 2, x0 : x0 + size // 4 + 2] = True
    return boxes, masks


def test_iou_and_pointing_are_invariant_to_permutations_of_tied_pixels():
    maps = _sparse_maps()
    boxes, masks = _blobs()
    flat = maps.flatten(1)
    cut = flat.topk(round(0.15 * flat.shape[1]), dim=1).values[:, -1:]
    assert ((flat == cut).float().mean(dim=1) > 0.5).all()  # most pixels tie at the cut-off: the case at stake
    reference = localization_scores(maps, boxes, masks)
    assert (reference.iou > 0).any()
    for seed in range(5):
        order = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(seed))
        shuffle = lambda t: t.flatten(1)[:, order].reshape(t.shape)
        permuted = localization_scores(shuffle(maps), shuffle(boxes), shuffle(masks))
        for name in ("iou", "pointing", "energy", "region_share"):
            np.testing.assert_allclose(getattr(permuted, name), getattr(reference, name), rtol=1e-6, atol=1e-12, err_msg=name)


def test_top_region_keeps_ties_at_the_cut_off_and_never_zero_pixels():
    values = torch.tensor([
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # all zero: empty
        [0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # one positive pixel, k = 2: just it
        [0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7],  # constant: every pixel ties at the cut-off
        [0.9, 0.5, 0.5, 0.5, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0],  # k = 2 cuts inside a tie of three: all in
        [0.9, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1],  # no tie at the cut-off: exactly k
    ])
    region = top_region(values, 0.2)
    assert region.sum(dim=1).tolist() == [0, 1, 10, 4, 2]
    assert region[3].tolist() == [True, True, True, True] + [False] * 6


def test_region_share_is_reported_and_a_constant_map_keeps_every_pixel():
    region = _box_and_mask(size=10, box=(0, 0, 5, 3))  # 15 of 100 pixels
    sharp = localization_scores(torch.where(region, 2.0, 0.1).float(), region, region, topk=0.15)
    assert sharp.region_share.tolist() == [0.15] and sharp.iou[0] == pytest.approx(1.0)
    flat = localization_scores(torch.full((1, 10, 10), 0.4), region, region, topk=0.15)
    assert flat.region_share.tolist() == [1.0] and flat.iou[0] == pytest.approx(0.15)
    sparse = localization_scores(torch.where(torch.arange(100).view(1, 10, 10) < 5, 1.0, 0.0), region, region, topk=0.15)
    assert sparse.region_share.tolist() == [0.05] and sparse.iou[0] == pytest.approx(5 / 15)
    assert localization_scores(torch.zeros(1, 10, 10), region, region).region_share.tolist() == [0.0]


def test_a_peak_plateau_straddling_the_box_edge_points_inside_in_any_pixel_order():
    region = _box_and_mask(size=8, box=(0, 0, 4, 8))  # left half
    maps = torch.zeros(1, 8, 8)
    maps[0, 3, 3:5] = 1.0  # two pixels tie at the maximum, one on each side of the box's edge
    assert localization_scores(maps, region, region).pointing.tolist() == [1.0]
    mirrored = localization_scores(maps.flip(-1), region.flip(-1), region.flip(-1))
    assert mirrored.pointing.tolist() == [1.0]


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


# ------------------------------------------------------------------ target "norm1": pytorch-grad-cam's ViT recipe


@pytest.mark.parametrize("layer", [-1, -2])
def test_norm1_maps_equal_pytorch_grad_cams_own_vit_recipe(tmp_path, layer):
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    encoder = tiny_encoder(tmp_path)
    score = random_head(encoder)
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    ours = grad_cam(encoder, images, targets, [layer], score, target="norm1")[encoder.num_layers + layer]
    assert ours.shape == (6, 4, 4) and ours.flatten(1).std(dim=1).gt(0).all()

    class Classifier(torch.nn.Module):  # the model pytorch-grad-cam sees: image -> logits
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, x):
            return score(self.encoder.features(x).pooled)

    def reshape_transform(tensor, height=4, width=4):  # the library's ViT tutorial, prefix count from the encoder
        result = tensor[:, encoder.num_prefix_tokens :, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    recipe = pytorch_grad_cam.GradCAM(model=Classifier().eval(), target_layers=[block_modules(encoder)[layer].norm1], reshape_transform=reshape_transform)
    expected = recipe(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])  # (6, 32, 32)
    from pytorch_grad_cam.utils.image import scale_cam_image

    # The library's own post-processing of a raw map: min-max scale, resize to the image (cv2), and again
    # min-max scale when layers are aggregated (a bilinear resize at scale 8 never lands on a token centre).
    ours_scaled = scale_cam_image(scale_cam_image(ours.numpy(), (32, 32)))
    assert np.abs(ours_scaled - expected).max() < 1e-4
    block_input = grad_cam(encoder, images, targets, [layer], score)[encoder.num_layers + layer]
    assert not torch.allclose(_normalised_t(block_input), _normalised_t(ours), atol=1e-3)  # a different tensor, a different map


def _normalised_t(maps):
    return torch.from_numpy(_normalised(maps))


@pytest.mark.parametrize("family", ["hf-siglip", "open_clip"])
def test_norm1_of_other_families_is_their_first_layernorm(tmp_path, family):
    from tests.encoders.conftest import OPEN_CLIP, hf_vision_model, open_clip_model

    if family == "hf-siglip":
        hf_vision_model("siglip").save_pretrained(tmp_path / "hf")
        encoder = load_encoder(tmp_path / "hf")
        norm_name = "layer_norm1"
    else:
        torch.save(open_clip_model().state_dict(), tmp_path / "oc.pt")
        encoder = load_encoder(tmp_path / "oc.pt", arch=f"open_clip:{OPEN_CLIP[0]}", options=OPEN_CLIP[1])
        norm_name = "ln_1"
    block = block_modules(encoder)[-1]
    assert norm1_module(block) is getattr(block, norm_name)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    weight = torch.randn(encoder.features(images[:1]).pooled.shape[1], 4, generator=torch.Generator().manual_seed(5))
    score = lambda pooled: pooled @ weight
    targets = torch.tensor([0, 3, 1])
    maps = grad_cam(encoder, images, targets, [-1], score, target="norm1")[encoder.num_layers - 1]
    assert maps.shape == (3, 2, 2) and maps.flatten(1).std(dim=1).gt(0).any()  # (ReLU may zero a whole map)
    expected = reference_grad_cam(lambda x: score(encoder.features(x).pooled), getattr(block, norm_name), images, targets, encoder.num_prefix_tokens, (2, 2))
    assert np.abs(_normalised(maps) - expected).max() < 1e-4


def test_an_unknown_target_or_a_block_without_norm1_is_refused_before_any_work(tmp_path):
    encoder = tiny_encoder(tmp_path)
    with pytest.raises(ValueError, match="block_input, norm1.*'norm2'"):
        grad_cam(encoder, torch.randn(1, 3, 32, 32), torch.tensor([0]), [-1], random_head(encoder), target="norm2")
    with pytest.raises(AttributionError, match="Linear has no first LayerNorm.*use target 'block_input'"):
        norm1_module(torch.nn.Linear(2, 2))
    block_modules(encoder)[0].norm1 = None  # block 0 loses its LayerNorm: refused up front, naming encoder and block
    with pytest.raises(AttributionError, match="tiny: block 0: Block has no first LayerNorm"):
        grad_cam(encoder, torch.randn(1, 3, 32, 32), torch.tensor([0]), [-1, 0], random_head(encoder), target="norm1")
