"""The mmsegmentation linear head: frozen backbone, state-dict checkpoint, IoUMetric, mmcv-lite ops."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imagesets import open_split
from imagesets.seg_folder import export_seg_folder, item_stem
from probes.mmseg_linear import (
    FrozenEncoderBackbone,
    MMSegConfig,
    SegFolder,
    point_sample,
    run_mmseg_linear,
)
from probes.segmentation import iou_metrics

DATA = "shapes:n=6:n_val=3:seed=0:size=32"


def test_frozen_backbone_is_bit_identical_after_training(tmp_path, tiny_encoder):
    before = {k: v.clone() for k, v in tiny_encoder.state_dict().items()}
    train, val = open_split(DATA, "train"), open_split(DATA, "val")
    folder = SegFolder(export_seg_folder(train, val, tmp_path / "cache"), list(train.seg_classes), img_suffix=".png", ade20k=False)
    assert sorted(p.name for p in (folder.root / "annotations" / "validation").iterdir()) == [f"{item_stem(i)}.png" for i in range(3)]
    result = run_mmseg_linear(tiny_encoder, folder, tmp_path / "work", MMSegConfig(iters=3, batch_size=2, log_interval=1), keep=[item_stem(0)])
    after = tiny_encoder.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"{key} changed during mmseg training"
    assert not tiny_encoder.training and not any(p.requires_grad for p in tiny_encoder.parameters())
    # The head trained and is saved as tensors only (loads under weights_only).
    head = torch.load(result.head_checkpoint, weights_only=True)
    assert {"conv_seg.weight", "bn.weight"} <= set(head)
    # Our metric on IoUMetric's own per-image areas gives IoUMetric's numbers.
    ours = iou_metrics(result.areas)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert abs(ours[key] - result.metrics[key]) <= 0.005 + 1e-6
    assert result.areas.shape == (3, 4, len(train.seg_classes)) and result.predictions[item_stem(0)].shape == (32, 32)


def test_backbone_uses_the_encoders_own_grid(tiny_encoder):
    backbone = FrozenEncoderBackbone(tiny_encoder, blocks=2)
    maps = backbone(torch.zeros(2, 3, 40, 24))  # another size: resized to the encoder's 32 px
    assert [tuple(m.shape) for m in maps] == [(2, 32, 2, 2)] * 2
    with pytest.raises(ValueError, match="has 2 blocks"):
        FrozenEncoderBackbone(tiny_encoder, blocks=3)


def test_point_sample_stand_in_matches_grid_sample():
    features = torch.randn(2, 3, 5, 7)
    points = torch.rand(2, 10, 2)
    expected = F.grid_sample(features, 2 * points[:, :, None] - 1, align_corners=False)[..., 0]
    torch.testing.assert_close(point_sample(features, points), expected)
    import mmcv.ops

    assert mmcv.ops.point_sample is not None


# ------------------------------------------------------------------ the 4-block backbone: every block normalised as dinov2


def _timm_encoder(tmp_path, depth=4, reg_tokens=0, **extra):
    import timm

    from encoders import load_encoder, save_encoder_checkpoint

    arch = "vit_small_patch16_224"
    options = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": depth, "num_heads": 2, **extra}
    if reg_tokens:
        options["reg_tokens"] = reg_tokens
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0, **options)
    with torch.no_grad():  # a non-trivial final norm, so that normalising or not is visible
        model.norm.weight.uniform_(0.5, 2.0)
        model.norm.bias.uniform_(-1.0, 1.0)
    return load_encoder(save_encoder_checkpoint(model.state_dict(), {"family": "timm", "arch": arch, "options": options}, tmp_path / f"vit{depth}.safetensors"))


@pytest.mark.parametrize("reg_tokens", [0, 2])
def test_four_block_backbone_equals_timm_forward_intermediates_with_norm(tmp_path, reg_tokens):
    encoder = _timm_encoder(tmp_path, reg_tokens=reg_tokens)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    maps = FrozenEncoderBackbone(encoder, blocks=4)(images)
    expected = encoder.model.forward_intermediates(images, indices=4, norm=True, output_fmt="NCHW", intermediates_only=True)
    assert len(maps) == 4
    for ours, reference in zip(maps, expected):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    raw = encoder.model.forward_intermediates(images, indices=4, norm=False, output_fmt="NCHW", intermediates_only=True)
    assert (maps[0] - raw[0]).abs().max() > 0.1  # the earlier blocks really are normalised now


def test_four_block_backbone_of_an_open_clip_tower_applies_ln_post_to_every_block(tmp_path):
    from encoders import load_encoder
    from tests.encoders.conftest import OPEN_CLIP, open_clip_model

    torch.save(open_clip_model().state_dict(), tmp_path / "oc.pt")
    encoder = load_encoder(tmp_path / "oc.pt", arch=f"open_clip:{OPEN_CLIP[0]}", options=OPEN_CLIP[1])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    blocks = min(4, encoder.num_layers)
    maps = FrozenEncoderBackbone(encoder, blocks=blocks)(images)
    last = encoder.num_layers - 1
    out = encoder.features(images, layers=list(range(last - blocks + 1, last + 1)))
    h, w = out.grid
    for ours, layer in zip(maps, range(last - blocks + 1, last + 1)):
        tokens = encoder.model.ln_post(out.layers[layer].patches)  # explicit: open_clip's final norm on each block
        torch.testing.assert_close(ours, tokens.transpose(1, 2).reshape(2, -1, h, w), rtol=1e-5, atol=1e-5)


def test_final_norm_is_refused_when_nothing_maps_the_last_block_to_the_final_tokens(tmp_path):
    from probes.mmseg_linear import final_norm

    encoder = _timm_encoder(tmp_path, depth=2)
    assert final_norm(encoder) is encoder.model.norm
    encoder.model.norm = torch.nn.Identity()  # then the final tokens are the last block's own
    assert isinstance(final_norm(encoder), torch.nn.Identity)
    adapter = encoder._adapter
    encoder._adapter = lambda model, images, layers: _scaled(adapter(model, images, layers))  # a final transform no module matches
    with pytest.raises(ValueError, match=r"vit2: no module maps its last block's tokens.*use blocks=1 \(--seg-blocks 1\)"):
        final_norm(encoder)
    assert FrozenEncoderBackbone(encoder, blocks=1)  # one block needs no norm search


def _scaled(out):
    out.patch_tokens = out.patch_tokens * 3.0
    return out


# ------------------------------------------------------------------ mmcv.ops stand-in: sigmoid_focal_loss as mmcv's kernel


def reference_focal_loss(logits, target, gamma, alpha, weight):
    """mmcv's sigmoid_focal_loss_{forward,backward}_cuda_kernel restated element by element (float64):
    returns (loss (N, C), d loss / d logits (N, C))."""
    flt_min = np.finfo(np.float32).tiny
    x = logits.double().numpy()
    n_rows, n_classes = x.shape
    loss, grad = np.zeros_like(x), np.zeros_like(x)
    for n in range(n_rows):
        t = int(target[n])
        for c in range(n_classes):
            p = 1.0 / (1.0 + np.exp(-x[n, c]))
            if t == c:
                loss[n, c] = -alpha * (1 - p) ** gamma * np.log(max(p, flt_min))
                grad[n, c] = -alpha * (1 - p) ** gamma * (1 - p - gamma * p * np.log(max(p, flt_min)))
            else:
                loss[n, c] = -(1 - alpha) * p**gamma * np.log(max(1 - p, flt_min))
                grad[n, c] = -(1 - alpha) * p**gamma * (gamma * (1 - p) * np.log(max(1 - p, flt_min)) - p)
            if weight is not None:
                loss[n, c] *= float(weight[t])
                grad[n, c] *= float(weight[t])
    return loss, grad


@pytest.mark.parametrize("with_weight", [False, True])
def test_sigmoid_focal_loss_stand_in_matches_mmcvs_kernel(with_weight):
    from probes.mmseg_linear import sigmoid_focal_loss

    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(7, 4, generator=generator, dtype=torch.float64)).requires_grad_(True)
    target = torch.tensor([0, 3, 1, 1, 2, 0, 3])
    weight = torch.tensor([0.5, 2.0, 1.5, 3.0], dtype=torch.float64) if with_weight else None
    loss, grad = reference_focal_loss(logits.detach(), target, 2.0, 0.25, weight)
    ours = sigmoid_focal_loss(logits, target, 2.0, 0.25, weight, "none")
    np.testing.assert_allclose(ours.detach().numpy(), loss, rtol=1e-10, atol=1e-12)
    mean = sigmoid_focal_loss(logits, target, 2.0, 0.25, weight, "mean")
    assert float(mean.detach()) == pytest.approx(loss.sum() / 7, rel=1e-10)
    assert float(sigmoid_focal_loss(logits, target, 2.0, 0.25, weight, "sum")) == pytest.approx(loss.sum(), rel=1e-10)
    mean.backward()
    np.testing.assert_allclose(logits.grad.numpy(), grad / 7, rtol=1e-10, atol=1e-12)  # the kernel's closed-form gradient


def test_focal_loss_weight_scales_the_row_of_each_items_class_not_a_column():
    from probes.mmseg_linear import sigmoid_focal_loss

    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 2, 1, 0])
    weight = torch.tensor([1.0, 10.0, 100.0])
    plain = sigmoid_focal_loss(logits, target, reduction="none")
    weighted = sigmoid_focal_loss(logits, target, weight=weight, reduction="none")
    torch.testing.assert_close(weighted, plain * weight[target][:, None])


def test_focal_loss_target_minus_one_or_num_classes_is_no_class():
    from probes.mmseg_linear import sigmoid_focal_loss

    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for background in (-1, 3):
        target = torch.tensor([background, 0, background, 2])
        loss, _ = reference_focal_loss(logits, target, 2.0, 0.25, None)
        ours = sigmoid_focal_loss(logits, target, reduction="none")
        np.testing.assert_allclose(ours.numpy(), loss, rtol=1e-10)
        p = logits[0].sigmoid()  # every column of a no-class row is a negative
        torch.testing.assert_close(ours[0], -(0.75) * p.pow(2) * torch.log(1 - p))
        with pytest.raises(ValueError, match="no class.*weight.*drop those rows or pass weight=None"):
            sigmoid_focal_loss(logits, target, weight=torch.ones(3, dtype=torch.float64))


def test_focal_loss_saturates_like_the_kernel_at_extreme_logits():
    from probes.mmseg_linear import sigmoid_focal_loss

    logits = torch.tensor([[-120.0, 120.0]])  # float32: sigmoid underflows; the kernel floors log() at FLT_MIN
    ours = sigmoid_focal_loss(logits, torch.tensor([0]), reduction="none")
    loss, _ = reference_focal_loss(logits, torch.tensor([0]), 2.0, 0.25, None)
    np.testing.assert_allclose(ours.numpy(), loss, rtol=1e-5)
    assert torch.isfinite(ours).all()
