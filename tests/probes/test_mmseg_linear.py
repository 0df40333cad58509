"""The mmsegmentation linear head: frozen backbone, state-dict checkpoint, IoUMetric, mmcv-lite ops."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.datasets import open_split
from benchmarks.datasets.seg_folder import export_seg_folder, item_stem
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
