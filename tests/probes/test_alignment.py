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


# ------------------------------------------------------------------ mutual kNN: the reference, ties, the outlier clip


def platonic_mutual_knn(x, y, k, q=0.95):
    """minyoungg/platonic-rep restated: measure_alignment.prepare_features (metrics.remove_outliers,
    exact=False) on one layer, F.normalize, metrics.compute_nearest_neighbors (argsort of the similarity
    with the diagonal at -1e8), metrics.AlignmentMetrics.mutual_knn's masks; per-item scores."""

    def prepare(feats):
        bound = torch.quantile(feats.abs().flatten(start_dim=1), q, dim=1).mean()
        return torch.nn.functional.normalize(feats.clamp(-bound, bound), p=2, dim=-1)

    def knn(feats):
        return (feats @ feats.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :k]

    a, b = prepare(torch.as_tensor(x).double()), prepare(torch.as_tensor(y).double())
    n = a.shape[0]
    rows = torch.arange(n).unsqueeze(1)
    mask_a, mask_b = torch.zeros(n, n), torch.zeros(n, n)
    mask_a[rows, knn(a)] = 1.0
    mask_b[rows, knn(b)] = 1.0
    return ((mask_a * mask_b).sum(dim=1) / k).numpy()


def duplicated(n=60, distinct=12, d=8, seed=5):
    """Caption-like embeddings: ``distinct`` different rows repeated, so similarities tie in blocks."""
    base = features(distinct, d, seed=seed)
    return base[torch.arange(n) % distinct] * 1.0


def test_mutual_knn_equals_platonic_rep_when_nothing_ties():
    x, y = features(150, 16, seed=7), torch.tanh(features(150, 16, seed=7) @ features(16, 12, seed=8)) + 0.3 * features(150, 12, seed=9)
    for k in (1, 5, 10):
        np.testing.assert_allclose(mutual_knn(x, y, k=k), platonic_mutual_knn(x, y, k), atol=1e-12)


def test_mutual_knn_with_tied_similarities_does_not_depend_on_the_items_order():
    x, y = features(60, 16, seed=11), duplicated()
    reference = mutual_knn(x, y, k=10)
    for seed in range(4):
        order = torch.randperm(60, generator=torch.Generator().manual_seed(seed))
        np.testing.assert_allclose(mutual_knn(x[order], y[order], k=10), reference[order.numpy()], atol=1e-12)


def test_tied_neighbours_share_the_remaining_places_the_expected_score_under_random_tie_breaking():
    x, y = features(40, 16, seed=12), duplicated(40, 10)  # each item has 3 exact duplicates in y
    k = 5
    exact = mutual_knn(x, y, k=k)
    generator = torch.Generator().manual_seed(0)
    draws = []
    for _ in range(400):  # the reference with ties broken by a random order of the items
        order = torch.randperm(40, generator=generator)
        draws.append(platonic_mutual_knn(x[order], y[order], k)[torch.argsort(order).numpy()])
    np.testing.assert_allclose(exact, np.mean(draws, axis=0), atol=0.03)
    assert np.std(draws, axis=0).max() > 0.05  # the reference itself moves with the order


def test_neighbour_weights_rows_sum_to_k_and_are_the_0_1_mask_without_ties():
    from probes.alignment import nearest_neighbours, neighbour_weights

    x = torch.nn.functional.normalize(features(30, 6, seed=13), dim=1)
    weights = neighbour_weights(x, 4)
    mask = torch.zeros(30, 30, dtype=torch.float64).scatter_(1, nearest_neighbours(x, 4), 1.0)
    assert torch.equal(weights, mask)
    tied = torch.nn.functional.normalize(duplicated(30, 6, d=6), dim=1)  # 4 duplicates of each row besides itself
    weights = neighbour_weights(tied, 2)
    torch.testing.assert_close(weights.sum(dim=1), torch.full((30,), 2.0, dtype=torch.float64))
    assert weights[0, 6] == pytest.approx(0.5) and weights[0, 0] == 0.0  # 2 places shared by 4 duplicates
    assert nearest_neighbours(tied, 2)[0].tolist() == [6, 12]  # stable: the lower indices first


def test_outlier_clip_is_per_representation_as_given():
    # One (n, d) matrix per side: the bound is that matrix's mean per-row 95th percentile of |x|, as
    # platonic-rep's remove_outliers on a one-layer stack; scaling one feature's outlier changes nothing else.
    from probes.alignment import _prepare

    x = features(50, 20, seed=14)
    x[3, 5] = 1e6  # one outlier
    bound = torch.quantile(x.abs(), 0.95, dim=1).mean()
    torch.testing.assert_close(_prepare(x, 0.95), torch.nn.functional.normalize(x.clamp(-bound, bound), dim=1))
    stack = x[:, None, :]  # platonic-rep's (n, L, d) with L = 1
    assert torch.quantile(stack.abs().flatten(start_dim=1), 0.95, dim=1).mean() == bound
