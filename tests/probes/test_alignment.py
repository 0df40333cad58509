"""Tests for probes.alignment: linear CKA and mutual kNN on hand-built cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from probes.alignment import linear_cka, linear_cka_ci, mutual_knn


def features(n=120, d=16, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, d)))


def test_cka_of_a_representation_with_itself_is_1():
    x = features()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling():
    x = features()
    y = torch.tanh(x @ features(16, 8, seed=1))  # a different, non-linear representation
    q, _ = torch.linalg.qr(features(16, 16, seed=2))
    base = linear_cka(x, y)
    assert 0.05 < base < 0.95
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, 0.02 * y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 5.0, y) == pytest.approx(base, abs=1e-10)  # centring removes offsets


def test_cka_of_independent_representations_is_small_and_its_ci_brackets_it():
    x, y = features(400, 8, seed=3), features(400, 8, seed=4)
    value = linear_cka(x, y)
    assert value < 0.1
    low, high = linear_cka_ci(x, y)
    assert low <= value <= high and low < high
    assert linear_cka_ci(x, x) == pytest.approx((1.0, 1.0))


def test_mutual_knn_of_identical_embeddings_is_1():
    x = features()
    scores = mutual_knn(x, x, k=10)
    assert scores.shape == (120,) and np.all(scores == 1.0)
    assert np.all(mutual_knn(x, 2.5 * x, k=10) == 1.0)  # the per-side clipping and L2 norm ignore scale


def test_mutual_knn_of_independent_embeddings_is_close_to_k_over_n():
    n, k = 400, 10
    values = [mutual_knn(features(n, 32, seed=s), features(n, 32, seed=100 + s), k=k).mean() for s in range(3)]
    chance = k / (n - 1)
    assert abs(np.mean(values) - chance) < 0.5 * chance


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="row-paired"):
        linear_cka(features(10), features(11))
    with pytest.raises(ValueError, match="k < n"):
        mutual_knn(features(10), features(10), k=10)
    bad = features(10)
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mutual_knn(bad, features(10), k=3)
