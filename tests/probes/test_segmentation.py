"""Segmentation probes on cached tokens: patch targets, metrics, the patch probe and the fast head."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from probes.segmentation import (
    IGNORE_INDEX,
    FastHeadConfig,
    PatchProbeConfig,
    SegInputError,
    bootstrap_miou,
    cached_tokens,
    check_mask,
    fast_linear_head,
    iou_metrics,
    patch_probe,
    patch_targets,
    per_image_miou,
    seg_areas,
)


def test_patch_targets_from_a_hand_built_mask():
    # A 2x2 grid of 4x4 patches over an 8x8 mask (plus a 1-pixel margin outside the grid: 9x9).
    mask = np.zeros((9, 9), np.uint8)
    mask[0:4, 0:4] = 1  # patch (0, 0): class 1 only
    mask[0:4, 6:8] = 2  # patch (0, 1): classes 0 and 2 (a boundary)
    mask[4:8, 0:4] = IGNORE_INDEX  # patch (1, 0): only ignore pixels -> nothing
    mask[4:8, 4:8] = IGNORE_INDEX
    mask[7, 7] = 3  # patch (1, 1): ignore + one pixel of class 3
    mask[8, :] = 2  # the margin row belongs to no patch
    targets = patch_targets(mask[None], grid=(2, 2), patch=(4, 4), num_classes=4)
    assert targets.shape == (1, 4, 4)
    expected = np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]], bool)
    np.testing.assert_array_equal(targets[0], expected)


def test_bad_masks_are_named_errors():
    with pytest.raises(SegInputError, match="label id 7 beyond the class count 4"):
        check_mask(np.full((4, 4), 7, np.uint8), 4, "shapes/val item 3")
    with pytest.raises(SegInputError, match="mask is 4x3 but its image is 5x3"):
        check_mask(np.zeros((3, 4), np.uint8), 4, "item 0", shape=(3, 5))
    with pytest.raises(SegInputError, match="has no segmentation masks"):
        check_mask(None, 4, "digits/train item 0")
    with pytest.raises(SegInputError, match="beyond the class count"):
        patch_targets(np.full((1, 4, 4), 9, np.uint8), (1, 1), (4, 4), 4)
    with pytest.raises(SegInputError, match="needs 8x8 mask pixels"):
        patch_targets(np.zeros((1, 4, 4), np.uint8), (2, 2), (4, 4), 4)


def test_miou_equals_mmseg_iou_metric():
    from probes.mmseg_linear import IoUMetric

    rng = np.random.default_rng(0)
    classes = 5
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": [f"c{k}" for k in range(classes)]}
    ours = []
    for _ in range(6):
        label = torch.from_numpy(rng.integers(0, classes - 1, (12, 10)))  # class 4 is never labelled
        label[rng.random((12, 10)) < 0.2] = IGNORE_INDEX
        prediction = torch.from_numpy(rng.integers(0, classes, (12, 10)))
        metric.process({}, [{"pred_sem_seg": {"data": prediction[None]}, "gt_sem_seg": {"data": label[None]}}])
        ours.append(seg_areas(prediction, label, classes).numpy())
    theirs = metric.compute_metrics(metric.results)
    mine = iou_metrics(np.stack(ours))
    for key in ("mIoU", "mAcc", "aAcc"):
        assert abs(mine[key] - theirs[key]) <= 0.005 + 1e-9, key  # IoUMetric rounds to 2 decimals
    low, high = bootstrap_miou(np.stack(ours), n_boot=200)
    assert low <= mine["mIoU"] <= high
    assert per_image_miou(np.stack(ours)).shape == (6,)


def _separable(n: int, rng, grid=(4, 4), dim=16, classes=3):
    """Tokens whose first ``classes`` channels light up with their patch's classes."""
    labels = rng.integers(0, classes, (n, *grid)).astype(np.uint8)
    masks = np.kron(labels, np.ones((4, 4), np.uint8))  # one class per 4x4-pixel patch
    masks[:, 0, 0] = (masks[:, 0, 0] + 1) % classes  # and a second class in each first patch
    targets = patch_targets(masks, grid, (4, 4), classes)
    tokens = rng.standard_normal((n, grid[0] * grid[1], dim)).astype(np.float16) * 0.3
    tokens[..., :classes] += 2 * targets
    return tokens, targets, masks


def test_patch_probe_learns_and_reports_seed_spread():
    rng = np.random.default_rng(0)
    train_x, train_y, _ = _separable(64, rng)
    eval_x, eval_y, _ = _separable(16, rng)
    config = PatchProbeConfig(hidden=32, epochs=4, min_steps=0, seeds=2, batch_images=8, lr=1e-2, final_lr=1e-3)
    result = patch_probe(cached_tokens(train_x), train_y, cached_tokens(eval_x), eval_y, dim=16, config=config)
    assert result.mean["recall"] > 80 and result.mean["f1"] > 80
    assert len(result.per_seed) == 2 and result.std["recall"] >= 0 and result.per_image_recall.shape == (16,)
    assert all(1 <= epoch <= 4 for epoch in result.best_epochs) and result.warmup_steps == min(500, result.steps // 5)


def test_a_short_schedule_on_small_data_is_raised_to_the_minimum_steps():
    from probes.segmentation import epochs_for

    assert epochs_for(2, 23, 1000) == 44 and epochs_for(5, 632, 1000) == 5 and epochs_for(3, 10, 0) == 3
    rng = np.random.default_rng(0)
    train_x, train_y, _ = _separable(16, rng)
    result = patch_probe(cached_tokens(train_x), train_y, cached_tokens(train_x), train_y, dim=16,
                         config=PatchProbeConfig(hidden=8, epochs=1, min_steps=20, seeds=1, batch_images=8))
    assert result.epochs == 10 and result.steps == 20  # 14 fit images: 2 steps per epoch


def test_fast_head_on_a_grid_that_leaves_a_margin():
    from probes.mmseg_linear import BNHead

    rng = np.random.default_rng(1)
    tokens, _, masks = _separable(40, rng)
    masks = np.pad(masks, ((0, 0), (0, 2), (0, 2)), mode="edge")  # 18 px crop, 4x4 grid of 4 px patches
    head = BNHead(in_channels=16, channels=16, num_classes=3, in_index=-1, dropout_ratio=0.0, align_corners=False,
                  loss_decode={"type": "mmseg.CrossEntropyLoss"})
    result = fast_linear_head(head, cached_tokens(tokens[:32]), masks[:32], cached_tokens(tokens[32:]), masks[32:], (4, 4), (4, 4), 3,
                              config=FastHeadConfig(epochs=15, min_steps=0, batch_images=8, lr=1e-2), keep=[0])
    assert result.metrics["mIoU"] > 60 and result.areas.shape == (8, 4, 3)
    assert result.predictions[0].shape == (18, 18)
