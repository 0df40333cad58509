"""Tests for the cls suite's choice of linear probe (task names and the memory rule)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from benchmarks.suites import classification


def context(**options) -> SimpleNamespace:
    return SimpleNamespace(options=classification.ClsOptions(**{"linear_epochs": 1, **options}), extraction=SimpleNamespace(device="cpu"), seed=0,
                           data="toy", shared={})


def linear_results(ctx, *data):
    return classification.linear_results(ctx, SimpleNamespace(encoder=SimpleNamespace(weights_hash="h")), "cls", *data)


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(4, 6, generator=generator) * 2
    ty, ey = torch.randint(0, 4, (120,), generator=generator), torch.randint(0, 4, (60,), generator=generator)
    return means[ty] + torch.randn(120, 6, generator=generator), ty, means[ey] + torch.randn(60, 6, generator=generator), ey


def test_auto_runs_the_exact_solver_when_features_fit(data):
    results = linear_results(context(), *data)
    assert list(results) == ["linear"] and results["linear"].method == "logreg_lbfgs"


def test_auto_falls_back_to_the_sgd_grid_when_they_do_not(data, monkeypatch):
    monkeypatch.setattr(classification, "DEFAULT_MEMORY_BUDGET", 1000)
    results = linear_results(context(grid_extend=False), *data)
    assert list(results) == ["linear_sgd"] and results["linear_sgd"].method == "linear_grid"
    assert results["linear_sgd"].extra["grid_extensions"] == []


def test_both_runs_both_and_shares_the_grid_selection_with_loc(data):
    ctx = context(linear="both")
    results = linear_results(ctx, *data)
    assert set(results) == {"linear", "linear_sgd"}
    assert list(ctx.shared.values()) == [results["linear_sgd"].selected]  # the loc suite's head reuses it



@pytest.mark.parametrize("extend", [True, False])
def test_grid_extend_governs_the_exact_path_too(data, monkeypatch, extend):
    seen = []
    real = classification.logreg_probe
    monkeypatch.setattr(classification, "logreg_probe", lambda *args, config, **kwargs: seen.append(config) or real(*args, config=config, **kwargs))
    result = linear_results(context(grid_extend=extend), *data)["linear"]
    assert seen[0].path_extend is extend and "extended" in result.extra


@pytest.mark.parametrize("select", ["kfold", "holdout"])
def test_linear_select_governs_the_exact_probes_choice_of_C(data, monkeypatch, select):
    seen = []
    real = classification.logreg_probe
    monkeypatch.setattr(classification, "logreg_probe", lambda *args, config, **kwargs: seen.append(config) or real(*args, config=config, **kwargs))
    result = linear_results(context(linear_select=select), *data)["linear"]
    assert seen[0].selection == select and result.extra["selection"] == ("5-fold" if select == "kfold" else "holdout")
    assert result.extra["n_holdout"] == (120 if select == "kfold" else pytest.approx(12, abs=2))  # k-fold holds out every train row once


def test_the_options_defaults_are_the_probe_configs():
    from probes.linear import LinearProbeConfig
    from probes.logreg import LogRegConfig

    options = classification.ClsOptions()
    assert options.linear_epochs == LinearProbeConfig().epochs
    assert options.grid_extend == LogRegConfig().path_extend == LinearProbeConfig().grid_extend
    assert options.linear_select == LogRegConfig().selection
