"""Tests for probes.linear: the one-pass grid of heads and the scikit-learn reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from probes import linear
from probes.linear import (
    LinearProbeConfig,
    linear_probe,
    sklearn_logreg_probe,
    stratified_holdout,
    validate_classification_inputs,
)

SMALL = LinearProbeConfig(
    lrs=(0.01, 0.1), weight_decays=(0.0, 1e-3), epochs=5, batch_size=64, min_steps=100, grid_extend=False
)


def blobs(n: int, dim: int, n_classes: int, *, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian class clusters: ``spread`` is the noise std relative to unit-scale class means."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(1234).standard_normal((n_classes, dim))
    y = rng.integers(0, n_classes, size=n)
    x = means[y] + spread * rng.standard_normal((n, dim))
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)


def split(n_train: int, n_eval: int, dim: int, n_classes: int, spread: float, seed: int = 0):
    tx, ty = blobs(n_train, dim, n_classes, spread=spread, seed=seed)
    ex, ey = blobs(n_eval, dim, n_classes, spread=spread, seed=seed + 1)
    return tx, ty, ex, ey


def test_separable_data_gives_high_top1():
    tx, ty, ex, ey = split(300, 200, 8, 6, spread=0.2)
    result = linear_probe(tx, ty, ex, ey, config=SMALL)
    assert result.top1 > 95.0
    assert result.top5 is not None and result.top5 >= result.top1
    assert result.n_eval == 200 and result.correct.shape == (200,) and result.correct.dtype == bool
    assert result.top1 == pytest.approx(result.correct.mean() * 100.0)
    assert result.top1_ci[0] <= result.top1 <= result.top1_ci[1]
    assert result.n_tried == 4 and set(result.selected) >= {"lr", "weight_decay"}
    assert 0.0 <= result.selection_score <= 100.0


def test_random_labels_are_near_chance():
    rng = np.random.default_rng(0)
    tx = torch.from_numpy(rng.standard_normal((400, 16)).astype(np.float32))
    ex = torch.from_numpy(rng.standard_normal((400, 16)).astype(np.float32))
    ty, ey = torch.from_numpy(rng.integers(0, 4, 400)), torch.from_numpy(rng.integers(0, 4, 400))
    result = linear_probe(tx, ty, ex, ey, config=SMALL)
    assert 10.0 < result.top1 < 40.0  # chance is 25%
    assert result.top5 is None  # fewer than 5 classes


def test_selection_ignores_eval_labels():
    tx, ty, ex, ey = split(240, 120, 6, 4, spread=0.9)
    first = linear_probe(tx, ty, ex, ey, config=SMALL)
    shuffled = ey[torch.randperm(ey.numel(), generator=torch.Generator().manual_seed(3))]
    second = linear_probe(tx, ty, ex, shuffled, config=SMALL)
    assert first.selected == second.selected
    assert first.selection_score == second.selection_score
    assert first.extra["holdout_top1"] == second.extra["holdout_top1"]


def test_heads_are_scored_only_on_heldout_train_rows(monkeypatch):
    tx, ty, ex, ey = split(200, 100, 6, 4, spread=0.5)
    calls = []
    original = linear._score_heads

    def recording(heads, x, y, rows, device):
        calls.append((x, rows.clone()))
        return original(heads, x, y, rows, device)

    monkeypatch.setattr(linear, "_score_heads", recording)
    linear_probe(tx, ty, ex, ey, config=SMALL)
    _, hold = stratified_holdout(ty, SMALL.holdout_fraction, SMALL.seed)
    assert len(calls) == 1
    assert calls[0][0] is tx
    assert torch.equal(calls[0][1], hold)


def test_grid_matches_sklearn_on_an_easy_problem():
    tx, ty, ex, ey = split(400, 300, 10, 5, spread=1.0)
    grid = linear_probe(tx, ty, ex, ey, config=SMALL)
    ref = sklearn_logreg_probe(tx, ty, ex, ey, Cs=(0.01, 0.1, 1.0))
    assert ref.selected["C"] in (0.01, 0.1, 1.0)
    assert ref.n_tried == 3 and ref.top5 is not None
    assert abs(grid.top1 - ref.top1) <= 3.0


def test_weight_decay_is_sklearn_l2_with_equivalent_c():
    # A head with weight decay wd minimises sklearn's objective with C = 1 / (wd * n_train): same
    # weights, and a factor of 2 in C would move them by far more than the tolerance.
    from sklearn.linear_model import LogisticRegression

    tx, ty, _, _ = split(200, 1, 5, 3, spread=1.2)
    wd = 1e-2
    config = LinearProbeConfig(
        lrs=(1.0,), weight_decays=(wd,), epochs=1, batch_size=200, min_steps=300, optimizer="sgd"
    )
    heads, _ = linear._train_heads(
        tx, ty, torch.arange(200), 3, torch.tensor([1.0]), torch.tensor([wd]), config, torch.device("cpu")
    )
    standardized = ((tx - heads.mean) / heads.std).numpy()
    ref = LogisticRegression(C=1.0 / (wd * 200), max_iter=1000, tol=1e-8).fit(standardized, ty.numpy())
    np.testing.assert_allclose(heads.weight[:, 0].T.numpy(), ref.coef_, atol=1e-3)
    np.testing.assert_allclose(heads.bias[0].numpy(), ref.intercept_, atol=1e-3)
    wrong = LogisticRegression(C=2.0 / (wd * 200), max_iter=1000, tol=1e-8).fit(standardized, ty.numpy())
    assert np.abs(heads.weight[:, 0].T.numpy() - wrong.coef_).max() > 0.05


def test_same_seed_is_deterministic_and_seed_changes_split():
    tx, ty, ex, ey = split(200, 100, 6, 4, spread=0.8)
    first = linear_probe(tx, ty, ex, ey, config=SMALL)
    second = linear_probe(tx, ty, ex, ey, config=SMALL)
    assert np.array_equal(first.correct, second.correct)
    assert first.selected == second.selected and first.extra["holdout_top1"] == second.extra["holdout_top1"]
    a = stratified_holdout(ty, 0.2, seed=0)[1]
    b = stratified_holdout(ty, 0.2, seed=1)[1]
    assert not torch.equal(a, b)


def test_stratified_holdout_keeps_every_class_in_the_fit_part():
    labels = torch.tensor([0] * 50 + [1] * 20 + [2] * 1)
    fit, hold = stratified_holdout(labels, 0.1, seed=0)
    assert sorted(torch.cat([fit, hold]).tolist()) == list(range(71))
    assert set(labels[fit].tolist()) == {0, 1, 2}
    assert (labels[hold] == 0).sum() == 5 and (labels[hold] == 1).sum() == 2 and (labels[hold] == 2).sum() == 0
    with pytest.raises(ValueError, match="holds out nothing"):
        stratified_holdout(torch.tensor([0, 1, 0, 1]), 0.1, seed=0)


def test_fp16_features_and_non_contiguous_labels():
    tx, ty, ex, ey = split(200, 100, 6, 3, spread=0.3)
    result = linear_probe(tx.half(), ty * 10 + 7, ex.half(), ey * 10 + 7, config=SMALL)
    assert result.top1 > 90.0


def test_refit_off_reports_the_selected_grid_head():
    tx, ty, ex, ey = split(200, 100, 6, 3, spread=0.5)
    config = LinearProbeConfig(**{**SMALL.__dict__, "refit": False})
    result = linear_probe(tx, ty, ex, ey, config=config)
    assert result.extra["refit"] is False and result.top1 > 80.0


def test_nan_features_are_rejected_with_row_count():
    tx, ty, ex, ey = split(60, 20, 4, 2, spread=0.5)
    tx[3, 1] = float("nan")
    tx[7, 0] = float("inf")
    with pytest.raises(ValueError, match=r"train features contain NaN/Inf \(2 rows"):
        linear_probe(tx, ty, ex, ey, config=SMALL)
    ex2 = ex.clone()
    ex2[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"eval features contain NaN/Inf \(1 rows"):
        sklearn_logreg_probe(tx.nan_to_num(posinf=0.0), ty, ex2, ey, Cs=(1.0,))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda tx, ty, ex, ey: (tx, ty[:-1], ex, ey), "feature rows but"),
        (lambda tx, ty, ex, ey: (tx, ty, ex, ey[:-1]), "feature rows but"),
        (lambda tx, ty, ex, ey: (tx, ty, ex[:, :-1], ey), "dims"),
        (lambda tx, ty, ex, ey: (tx[:, :, None], ty, ex, ey), "2-D"),
        (lambda tx, ty, ex, ey: (tx, torch.zeros_like(ty), ex, torch.zeros_like(ey)), "at least 2"),
        (lambda tx, ty, ex, ey: (tx, ty, ex, torch.full_like(ey, 9)), "absent from train"),
        (lambda tx, ty, ex, ey: (tx, ty.float(), ex, ey), "integer class ids"),
        (lambda tx, ty, ex, ey: (tx.long(), ty, ex, ey), "floating-point"),
        (lambda tx, ty, ex, ey: (tx, ty, ex[:0], ey[:0]), "empty"),
    ],
)
def test_invalid_inputs_raise_clear_errors(mutate, message):
    args = mutate(*split(40, 20, 4, 3, spread=0.5))
    with pytest.raises(ValueError, match=message):
        validate_classification_inputs(*args)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="optimizer"):
        LinearProbeConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="holdout_fraction"):
        LinearProbeConfig(holdout_fraction=1.0)
    with pytest.raises(ValueError, match="at least one"):
        LinearProbeConfig(lrs=())
    assert LinearProbeConfig().n_heads >= 16


def test_sgd_optimizer_and_binary_sklearn():
    tx, ty, ex, ey = split(200, 100, 6, 2, spread=0.5)
    config = LinearProbeConfig(**{**SMALL.__dict__, "optimizer": "sgd", "lrs": (0.1, 0.5)})
    assert linear_probe(tx, ty, ex, ey, config=config).top1 > 90.0
    ref = sklearn_logreg_probe(tx, ty, ex, ey, Cs=(1.0,))
    assert ref.top1 > 90.0 and ref.top5 is None


def test_grid_edges_names_each_extendable_edge():
    lrs, wds = [0.01, 0.1, 1.0], [0.0, 1e-4, 1e-3]
    assert linear.grid_edges(0.1, 1e-4, lrs, wds) == []
    assert linear.grid_edges(0.01, 0.0, lrs, wds) == ["lr_low"]  # weight decay 0 has nothing below it
    assert linear.grid_edges(1.0, 1e-3, lrs, wds) == ["lr_high", "wd_high"]
    assert linear.grid_edges(0.1, 1e-4, lrs, [1e-4, 1e-3]) == ["wd_low"]
    assert linear.grid_edges(0.1, 1e-4, [0.1], [1e-4]) == []  # one value per axis: no step known
    assert linear._extend_values(["lr_low", "wd_high"], lrs, wds) == (
        pytest.approx([0.001, 0.01, 0.1, 1.0]), pytest.approx([0.0, 1e-4, 1e-3, 1e-2])
    )


def test_choice_below_the_grid_is_flagged_then_found_by_extension():
    # Adam on well-separated blobs: held-out top-1 falls as lr grows (100% at lr <= 1e-3, 95% at 0.1),
    # so a grid of 0.1..10 chooses its smallest lr.
    tx, ty, ex, ey = split(400, 200, 32, 4, spread=2.0)
    grid = dict(lrs=(0.1, 1.0, 10.0), weight_decays=(0.0,), epochs=5, batch_size=64, min_steps=60, refit=False)
    fixed = linear_probe(tx, ty, ex, ey, config=LinearProbeConfig(**grid, grid_extend=False))
    assert fixed.selected["lr"] == 0.1 and fixed.extra["at_edge"] == ["lr_low"]
    assert fixed.n_tried == 3 and fixed.extra["grid_extensions"] == []

    extended = linear_probe(tx, ty, ex, ey, config=LinearProbeConfig(**grid, max_grid_extensions=3))
    assert extended.selected["lr"] < 0.1
    assert extended.selection_score > fixed.selection_score
    steps = extended.extra["grid_extensions"]
    assert 1 <= len(steps) <= 3 and all(step == {"edges": ["lr_low"], "new_heads": 1} for step in steps)
    assert extended.n_tried == 3 + len(steps)  # only the new heads were trained
    # The original heads' held-out scores are unchanged by the extension.
    for key, value in fixed.extra["holdout_top1"].items():
        assert extended.extra["holdout_top1"][key] == value
    assert extended.extra["at_edge"] == [] or len(steps) == 3  # interior, or the stated limit was hit
