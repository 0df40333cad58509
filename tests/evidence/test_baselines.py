"""Trivial baselines and the degenerate mark: a probe that learned nothing is flagged, one that learned is not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evidence.baselines import check_above, constant_classifier, mean_check
from probes.segmentation import constant_areas, constant_patches, constant_segmentation, iou_metrics, macro_from_counts, patch_counts, patch_scores


def test_a_classifier_that_always_answers_one_class_is_flagged_whatever_its_score():
    labels = np.array([0] * 60 + [1] * 20 + [2] * 20)
    correct = labels == 0  # always "0": 60% top-1, the majority's own score
    assert "constant" in constant_classifier(correct, labels)
    check = mean_check(correct, labels == 0, scale=100.0, constant=constant_classifier(correct, labels))
    assert check.baseline == pytest.approx(60.0) and check.degenerate and "constant" in check.degenerate
    assert check.extra()["trivial_baseline"] == pytest.approx(60.0) and "degenerate" in check.extra()


def test_a_classifier_at_its_baseline_is_flagged_and_one_far_above_is_not():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    majority = labels == np.bincount(labels).argmax()
    guessing = rng.random(400) < majority.mean()  # right as often as the majority, on other items
    assert "not significantly above" in mean_check(guessing, majority, scale=100.0).degenerate
    learned = rng.random(400) < 0.9
    check = mean_check(learned, majority, scale=100.0)
    assert check.degenerate == "" and check.delta_ci[0] > 0 and "degenerate" not in check.extra()
    assert constant_classifier(learned, labels) == ""


def test_check_above_recomputes_a_ratio_metric_on_the_same_resampled_items():
    seen = []
    check = check_above(lambda i: seen.append(i) or float(len(i)), lambda i: 0.0, 5, n_boot=3)
    assert check.delta == 5.0 and check.degenerate == "" and all(len(items) == 5 for items in seen)


def _targets(n=30, seed=0):
    rng = np.random.default_rng(seed)
    targets = np.zeros((n, 16, 3), dtype=bool)
    targets[..., 0] = True  # background everywhere
    targets[:, :4, 1] = rng.random((n, 4)) < 0.8
    targets[:, 4:8, 2] = rng.random((n, 4)) < 0.8
    return torch.from_numpy(targets)


def test_macro_scores_from_counts_match_patch_scores():
    targets = _targets()
    probabilities = torch.rand(targets.shape, generator=torch.Generator().manual_seed(1))
    counts = patch_counts(probabilities, targets)
    scores = patch_scores(probabilities, targets)
    for metric in ("recall", "precision", "f1"):
        assert macro_from_counts(counts, metric) == pytest.approx(getattr(scores, metric))


def test_a_constant_patch_probe_is_flagged_and_a_perfect_one_is_not():
    targets = _targets()
    prior = targets[targets.any(-1)].float().mean(0)
    blind = prior.expand(targets.shape)
    assert "constant" in constant_patches(blind, targets)
    blind_counts, trivial_counts = patch_counts(blind, targets), patch_counts(prior.expand(targets.shape), targets)
    check = check_above(lambda i: macro_from_counts(blind_counts[i], "recall"), lambda i: macro_from_counts(trivial_counts[i], "recall"), len(targets),
                        constant=constant_patches(blind, targets))
    assert check.degenerate and check.delta == 0.0
    perfect = targets.float()
    perfect_counts = patch_counts(perfect, targets)
    assert constant_patches(perfect, targets) == ""
    check = check_above(lambda i: macro_from_counts(perfect_counts[i], "recall"), lambda i: macro_from_counts(trivial_counts[i], "recall"), len(targets))
    assert check.degenerate == "" and check.delta > 50


def test_background_everywhere_is_a_constant_segmentation_at_its_baseline():
    masks = [np.pad(np.ones((4, 4), np.uint8), 2) for _ in range(6)]  # class 1 in the middle, background 0 around
    background = constant_areas(masks, 0, 2)
    assert "constant" in constant_segmentation(background) and iou_metrics(background)["aAcc"] == pytest.approx(75.0)
    perfect = np.stack([np.stack([np.bincount(m.ravel(), minlength=2)] * 4) for m in masks])  # intersect = union = pred = label
    assert constant_segmentation(perfect) == "" and iou_metrics(perfect)["mIoU"] == pytest.approx(100.0)
