"""Tests for probes.logreg: the exact (full-batch L-BFGS) logistic-regression probe."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from probes.linear import sklearn_logreg_probe
from probes.logreg import LogRegConfig, fits_in_memory, logreg_probe

CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def features(n: int, dim: int, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian classes with uneven channel scales (regularisation matters)."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).standard_normal((n_classes, dim)) * 0.6
    scales = np.exp(np.random.default_rng(7).normal(0.0, 0.5, size=dim))
    y = rng.integers(0, n_classes, size=n)
    x = (means[y] + rng.standard_normal((n, dim))) * scales + 3.0
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)


@pytest.fixture(scope="module")
def problem():
    tx, ty = features(800, 24, 6, seed=0)
    ex, ey = features(1000, 24, 6, seed=1)
    return tx, ty, ex, ey


def test_matches_scikit_learn_top1_and_chosen_C(problem):
    tx, ty, ex, ey = problem
    exact = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=CS, path_patience=None))
    reference = sklearn_logreg_probe(tx, ty, ex, ey, Cs=CS)
    assert exact.selected["C"] == reference.selected["C"]
    assert abs(exact.top1 - reference.top1) <= 0.3
    for key, value in reference.extra["holdout_top1"].items():
        assert exact.extra["holdout_top1"][key] == pytest.approx(value, abs=0.6)  # at most one held-out row apart
    assert all(exact.extra["converged"].values()) and exact.extra["refit_converged"]


def test_selection_uses_only_train_and_reports_the_path(problem):
    tx, ty, ex, ey = problem
    first = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=CS, path_patience=None))
    shuffled = ey[torch.randperm(ey.numel(), generator=torch.Generator().manual_seed(0))]
    second = logreg_probe(tx, ty, ex, shuffled, config=LogRegConfig(Cs=CS, path_patience=None))
    assert first.selected == second.selected and first.extra["holdout_top1"] == second.extra["holdout_top1"]
    assert first.n_tried == len(CS) and first.method == "logreg_lbfgs"
    assert first.top5 is not None and first.top5 >= first.top1
    edge = {min(CS): ["C_low"], max(CS): ["C_high"]}.get(first.selected["C"], [])
    assert first.extra["at_edge"] == edge


def test_strong_regularisation_shrinks_weights_toward_chance():
    tx, ty = features(300, 8, 3, seed=2)
    ex, ey = features(300, 8, 3, seed=3)
    weak = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=(10.0,)))
    strong = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=(1e-6,)))
    assert weak.top1 > strong.top1 + 20.0


def test_path_patience_stops_after_no_improvement(problem):
    tx, ty, ex, ey = problem
    full = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=CS, path_patience=None))
    early = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=CS, path_patience=1))
    scores = list(early.extra["holdout_top1"].values())
    assert early.n_tried < full.n_tried and scores[-1] <= max(scores[:-1])
    assert early.extra["not_fitted"] == [f"C={c:.3g}" for c in CS[early.n_tried:]] and full.extra["not_fitted"] == []
    assert all(full.extra["holdout_top1"][key] == value for key, value in early.extra["holdout_top1"].items())
    assert early.selection_score == max(scores)


def test_default_path_stops_after_the_peak_with_the_full_sweeps_choice():
    tx, ty = features(400, 48, 6, seed=0)  # few rows per dimension: weak regularisation overfits, the peak is early
    ex, ey = features(1000, 48, 6, seed=1)
    cs = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    early = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=cs))
    reference = sklearn_logreg_probe(tx, ty, ex, ey, Cs=cs)
    assert early.n_tried < len(cs) and early.extra["not_fitted"]
    assert early.selected["C"] == reference.selected["C"] and abs(early.top1 - reference.top1) <= 0.3


@pytest.mark.parametrize("given", [(10.0, 31.6227766, 100.0), (0.01, 0.0316227766, 0.1)], ids=["peak_below", "peak_above"])
def test_a_peak_beyond_the_given_Cs_is_flagged_then_found_by_extension(given):
    from benchmarks.perf.bench_linear_grid import make_features

    data = make_features(1500, 500, 128, 10)  # held-out top-1 over C = 10^-4..10^2 peaks at C = 1 only
    plain = logreg_probe(data.train_x, data.train_y, data.eval_x, data.eval_y, config=LogRegConfig(Cs=given, path_patience=None, path_extend=False))
    assert plain.extra["at_edge"] == (["C_low"] if given[0] > 1 else ["C_high"]) and plain.extra["extended"] == []
    grown = logreg_probe(data.train_x, data.train_y, data.eval_x, data.eval_y, config=LogRegConfig(Cs=given))
    assert grown.selected["C"] == pytest.approx(1.0) and grown.extra["at_edge"] == []
    assert len(grown.extra["extended"]) == 3 and grown.n_tried == 6  # two steps to the peak, one past it
    path_cs = tuple(float(key[2:]) for key in grown.extra["holdout_top1"])
    reference = sklearn_logreg_probe(data.train_x, data.train_y, data.eval_x, data.eval_y, Cs=path_cs)
    assert reference.selected["C"] == pytest.approx(1.0, rel=1e-3) and abs(grown.top1 - reference.top1) <= 0.3


def test_bad_config_and_memory_rule():
    with pytest.raises(ValueError, match="Cs"):
        LogRegConfig(Cs=(0.0,))
    with pytest.raises(ValueError, match="path_patience"):
        LogRegConfig(path_patience=0)
    with pytest.raises(ValueError, match="max_path_extensions"):
        LogRegConfig(max_path_extensions=-1)
    assert fits_in_memory(50_000, 768, 100)
    assert not fits_in_memory(1_281_167, 1152, 1000, budget_bytes=1 << 30)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu(problem):
    tx, ty, ex, ey = problem
    cpu = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=CS))
    gpu = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=CS), device="cuda")
    assert gpu.selected == cpu.selected and abs(gpu.top1 - cpu.top1) <= 0.3
