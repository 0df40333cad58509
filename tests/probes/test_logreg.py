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


def test_holdout_selection_matches_scikit_learn_top1_and_chosen_C(problem):
    tx, ty, ex, ey = problem
    exact = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=CS, path_patience=None, selection="holdout"))
    reference = sklearn_logreg_probe(tx, ty, ex, ey, Cs=CS)
    assert exact.selected["C"] == reference.selected["C"]
    assert abs(exact.top1 - reference.top1) <= 0.3
    one_row = 100.0 / exact.extra["n_holdout"]
    for key, value in reference.extra["holdout_top1"].items():
        assert exact.extra["holdout_top1"][key] == pytest.approx(value, abs=one_row + 1e-9)  # at most one held-out row apart
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


def test_path_patience_stops_after_drops_beyond_the_noise_and_lists_what_it_skipped(problem):
    tx, ty, ex, ey = problem
    cs = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e-6, 1e-5)  # sorted: the two strongest first, far below the peak
    full = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=cs, path_patience=None, selection="holdout"))
    scores = list(full.extra["holdout_top1"].values())
    assert scores[0] < 40 and scores[2] > 80  # 1e-6 and 1e-5 regularise to near chance; 1e-3 onwards fit well
    reverse = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=cs, path_patience=1, selection="holdout"))
    assert reverse.n_tried == full.n_tried  # rising scores are never drops: nothing skipped
    assert full.extra["not_fitted"] == [] and reverse.extra["not_fitted"] == []


@pytest.mark.parametrize("selection", ["kfold", "holdout"])
def test_default_path_keeps_the_full_sweeps_choice(selection):
    tx, ty = features(400, 48, 6, seed=0)  # few rows per dimension: weak regularisation overfits, the peak is early
    ex, ey = features(1000, 48, 6, seed=1)
    cs = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    early = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=cs, selection=selection))
    full = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=cs, selection=selection, path_patience=None))
    assert early.selected == full.selected and early.top1 == full.top1
    if selection == "holdout":
        reference = sklearn_logreg_probe(tx, ty, ex, ey, Cs=cs)
        assert early.selected["C"] == reference.selected["C"] and abs(early.top1 - reference.top1) <= 0.3


# ------------------------------------------------------------------ k-fold selection


def test_kfold_assignment_is_stratified_balanced_and_seeded():
    from probes.logreg import kfold_assignment

    labels = torch.tensor([0] * 13 + [1] * 7 + [2] * 3)
    folds = kfold_assignment(labels, 5, seed=0)
    assert folds.shape == labels.shape and set(folds.tolist()) == set(range(5))
    sizes = torch.bincount(folds, minlength=5)
    assert int(sizes.max() - sizes.min()) <= 1  # 23 rows: 5, 5, 5, 4, 4
    for cls in range(3):  # each class spread over the folds as evenly as its count allows
        per_fold = torch.bincount(folds[labels == cls], minlength=5)
        assert int(per_fold.max() - per_fold.min()) <= 1
    assert torch.equal(folds, kfold_assignment(labels, 5, seed=0)) and not torch.equal(folds, kfold_assignment(labels, 5, seed=1))


def test_a_folds_affine_objective_equals_its_own_standardisation():
    """One standardised copy of train serves every fold: the fold's objective, on the all-train-standardised
    rows through its affine map, equals the objective on its fit rows standardised with their own mean/std."""
    from probes.standardize import feature_moments as _moments
    from probes.logreg import _folds, _Objective, _standardized, kfold_assignment

    cpu = torch.device("cpu")
    tx, ty = features(60, 5, 3, seed=4)
    _, _, folds, _ = _folds(tx, ty, 3, LogRegConfig(folds=3), cpu)
    assignment = kfold_assignment(ty, 3, seed=0)
    generator = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(5, 3, generator=generator), torch.randn(3, generator=generator)
    for k, fold in enumerate(folds):
        fit_rows, held_rows = torch.nonzero(assignment != k).flatten(), torch.nonzero(assignment == k).flatten()
        mean, std = _moments(tx, fit_rows, cpu)
        direct = _Objective([(_standardized(tx, fit_rows, mean, std, cpu), ty[fit_rows])], 3)
        loss, grad_w, grad_b = fold.objective(weight, bias, 0.01)
        loss_d, grad_w_d, grad_b_d = direct(weight, bias, 0.01)
        assert loss == pytest.approx(loss_d, rel=1e-5)
        assert torch.allclose(grad_w, grad_w_d, atol=1e-5) and torch.allclose(grad_b, grad_b_d, atol=1e-6)
        direct_predictions = torch.addmm(bias, _standardized(tx, held_rows, mean, std, cpu), weight).argmax(1)
        assert torch.equal(fold.held_y, ty[held_rows]) and torch.equal(fold.predict(weight, bias), direct_predictions)


@pytest.mark.parametrize("n_classes", [3, 20])
def test_the_class_major_layout_gives_the_same_loss_and_gradient(monkeypatch, n_classes):
    import probes.logreg as logreg

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 24, generator=generator), torch.randint(0, n_classes, (300,), generator=generator)
    weight, bias = torch.randn(24, n_classes, generator=generator) * 0.1, torch.randn(n_classes, generator=generator)
    affine = (torch.rand(24, generator=generator) + 0.5, torch.randn(24, generator=generator))
    objective = logreg._Objective([(x[:100], y[:100]), (x[150:], y[150:])], n_classes, affine)
    monkeypatch.setattr(logreg, "_CLASS_MAJOR_BELOW", 0)
    rows_first = objective(weight, bias, 0.01)
    monkeypatch.setattr(logreg, "_CLASS_MAJOR_BELOW", 1000)
    classes_first = objective(weight, bias, 0.01)
    assert rows_first[0] == pytest.approx(classes_first[0], rel=1e-6)
    assert torch.allclose(rows_first[1], classes_first[1], atol=1e-6) and torch.allclose(rows_first[2], classes_first[2], atol=1e-6)
    assert classes_first[1].shape == weight.shape and classes_first[1].is_contiguous()


def test_kfold_scores_every_train_row_once_and_is_steadier_over_split_seeds_than_one_holdout():
    tx, ty = features(300, 32, 5, seed=5)  # few rows: a 30-row held-out part moves by 3.3 points per item
    ex, ey = features(600, 32, 5, seed=6)
    cs = tuple(float(c) for c in np.logspace(-4, 2, 13))
    kfold = [logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=cs, seed=s)) for s in range(4)]
    holdout = [logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=cs, seed=s, selection="holdout")) for s in range(4)]
    assert kfold[0].extra["n_holdout"] == 300 and sorted(kfold[0].extra["n_fit"]) == [240] * 5
    assert kfold[0].extra["selection"] == "5-fold" and holdout[0].extra["n_holdout"] == 30
    spread = lambda results: max(r.top1 for r in results) - min(r.top1 for r in results)
    assert spread(kfold) < spread(holdout), ([r.selected["C"] for r in kfold], [r.selected["C"] for r in holdout])


# ------------------------------------------------------------------ the choice of C: noise, ties, frozen warm starts


def _path(scores, patience=2, n_holdout=109):
    """The path's stopping rule driven by scripted held-out scores (one per C, in turn)."""
    from probes.logreg import _fit_path

    calls = iter(scores)
    cs = [10.0 ** (k - 4) for k in range(len(scores))]
    return _fit_path(lambda c, start: {"C": c, "score": next(calls)}, cs, patience, n_holdout)


def test_holdout_noise_is_the_binomial_standard_error_and_at_least_one_item():
    from probes.logreg import holdout_noise

    assert holdout_noise(88.1, 109) == pytest.approx(100 * np.sqrt(0.881 * 0.119 / 109))  # 3.10 points
    assert holdout_noise(100.0, 50) == pytest.approx(2.0)  # no binomial spread at 100%: one item
    assert holdout_noise(50.0, 10_000) == pytest.approx(0.5)


def test_a_tie_or_a_dip_within_the_noise_is_not_a_drop():
    # The MobileNetV2 path: 83.5, 88.1, 87.2, 87.2 stopped the old path (a tie counted as a drop),
    # while the next values rose to 89.0. 0.9 points is within the noise of 88.1 on 109 items (3.1).
    path = _path([83.5, 88.1, 87.2, 87.2, 89.0, 88.1, 87.2])
    assert [entry["score"] for entry in path] == [83.5, 88.1, 87.2, 87.2, 89.0, 88.1, 87.2]


def test_two_consecutive_drops_beyond_the_noise_stop_the_path_and_a_recovery_resets_the_count():
    path = _path([80.0, 90.0, 85.0, 89.0, 85.0, 84.0, 95.0])  # noise at 90 on 109 items: 2.87 points
    assert [entry["score"] for entry in path] == [80.0, 90.0, 85.0, 89.0, 85.0, 84.0]
    assert len(_path([80.0, 90.0, 85.0, 95.0], patience=1)) == 3
    assert len(_path([80.0, 90.0, 85.0, 95.0], patience=None)) == 4


def test_a_dip_before_the_scores_rise_above_the_first_by_the_noise_does_not_stop_the_path():
    # 5 pooled folds of a 300-row problem (noise 2.5 points at 26): it dipped at strong regularisation, then rose.
    scores = [24.7, 26.0, 24.0, 23.0, 22.0, 25.7, 32.0, 40.3, 38.0, 30.0, 29.0, 20.0]
    path = _path(scores, n_holdout=300)
    assert [entry["score"] for entry in path] == scores[:11]  # stops only after two drops from the real peak (40.3)


def test_select_c_prefers_the_strongest_regularisation_among_ties_and_the_grid_over_an_extension():
    from probes.logreg import select_c

    entries = lambda scores, extended=(): [{"score": v, "extended": i in extended} for i, v in enumerate(scores)]
    assert select_c(entries([90.0, 92.0, 92.0, 91.0])) == 1
    assert select_c(entries([100.0, 100.0, 100.0, 100.0], extended={0})) == 1  # a tie never picks a value beyond the grid
    assert select_c(entries([100.0, 99.0, 100.0, 100.0], extended={0})) == 2
    assert select_c(entries([93.0, 92.0, 91.0], extended={0})) == 0  # beyond the grid when it beats it outright


def test_select_c_with_a_margin_takes_the_strongest_regularisation_within_it():
    from probes.logreg import select_c

    entries = lambda scores, extended=(): [{"score": v, "extended": i in extended} for i, v in enumerate(scores)]
    assert select_c(entries([80.0, 91.0, 92.0, 93.0, 90.0]), margin=1.0) == 2  # 92 is within 1 point of 93; 91 is not
    assert select_c(entries([80.0, 91.0, 92.0, 93.0, 90.0]), margin=2.0) == 1
    assert select_c(entries([80.0, 91.0, 92.0, 93.0, 90.0]), margin=0.0) == 3
    assert select_c(entries([95.0, 93.0, 94.0], extended={0}), margin=1.5) == 0  # the extension beats the grid outright: it competes
    assert select_c(entries([93.5, 93.0, 94.0], extended={0}), margin=1.5) == 1  # it does not: the grid's strongest within the margin


def test_when_every_held_out_score_ties_the_grids_smallest_C_is_chosen_and_nothing_is_extended():
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    x = np.eye(3)[y] * 20.0 + rng.standard_normal((120, 3)) * 0.1  # trivially separable: 100% held-out everywhere
    cs = (0.01, 0.1, 1.0)
    result = logreg_probe(torch.from_numpy(x).float(), torch.from_numpy(y), torch.from_numpy(x).float(), torch.from_numpy(y), config=LogRegConfig(Cs=cs))
    assert set(result.extra["holdout_top1"].values()) == {100.0}
    assert result.selected["C"] == 0.01 and result.extra["extended"] == []


def test_a_frozen_warm_start_is_refitted_from_zeros():
    from sklearn.datasets import load_digits

    digits = load_digits()  # raw pixels: flat directions, so a warm start already meets the tolerance at a nearby C
    x, y = torch.from_numpy(digits.data[:600]).float(), torch.from_numpy(digits.target[:600])
    cs = (1.0, 1.01, 1.02)
    result = logreg_probe(x, y, x[:100], y[:100], config=LogRegConfig(Cs=cs, path_patience=None, path_extend=False, standardize=False, selection="holdout"))
    frozen = {key: info for key, info in result.extra["cold_checked"].items() if info["why"] == "frozen"}
    assert frozen, result.extra["n_iter"]
    for key, info in frozen.items():
        assert info["warm_iter"] == 0 and result.extra["n_iter"][key] > 0  # the cold fit did the work the warm start skipped


def test_the_refit_starts_from_zeros_as_scikit_learns(problem):
    tx, ty, ex, ey = problem
    result = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=CS))
    assert result.selected["C"] != min(CS)  # the chosen fit was warm-started on the path
    single = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=(result.selected["C"],)))  # from zeros, refit from zeros
    assert single.top1 == result.top1 and np.array_equal(single.correct, result.correct)


def test_the_refit_does_not_move_with_the_order_of_the_train_rows():
    """The split seed orders the train rows fold by fold; the refit's predictions must not follow it.
    On these features (512 dims, rank-48 classes, C = 1) a refit stopped at the path's ``tol`` (1e-4)
    gave 1 of 1,000 eval items differently for this row order (3 for others); at ``refit_tol`` none."""
    from benchmarks.perf.bench_linear_grid import make_features

    data = make_features(1000, 1000, 512, 10)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(1))
    config = LogRegConfig(Cs=(1.0,), selection="holdout", path_extend=False, path_patience=None, threads=1)
    as_given = logreg_probe(data.train_x, data.train_y, data.eval_x, data.eval_y, config=config)
    reordered = logreg_probe(data.train_x[order], data.train_y[order], data.eval_x, data.eval_y, config=config)
    assert as_given.extra["refit_converged"] and reordered.extra["refit_converged"]
    assert np.array_equal(as_given.correct, reordered.correct), int((as_given.correct != reordered.correct).sum())


# ------------------------------------------------------------------ threads


def test_fastest_threads_picks_the_fastest_count_and_restores_torchs_setting():
    import time

    from probes.threads import fastest_threads, thread_candidates

    previous = torch.get_num_threads()
    slow_with_more = lambda: time.sleep(0.002 * torch.get_num_threads() ** 2)  # a stalled multi-thread run
    best, medians = fastest_threads(slow_with_more, [4, 3, 1], repeats=2)
    assert best == 1 and set(medians) == {4, 3, 1} and medians[1] < medians[4]
    assert torch.get_num_threads() == previous
    assert thread_candidates(8) == [8, 7, 1] and thread_candidates(2) == [2, 1] and thread_candidates(1) == [1]


def test_the_solver_times_its_threads_on_a_large_problem_and_uses_one_on_a_small(problem, monkeypatch):
    import probes.logreg as logreg

    tx, ty, ex, ey = problem
    small = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=(0.1,)))
    assert small.extra["threads"]["path"] == {"threads": 1, "rule": "small problem"}
    monkeypatch.setattr(logreg, "SINGLE_THREAD_WORK", 0)
    timed = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=(0.1,)))
    path = timed.extra["threads"]["path"]
    assert path["rule"] == "fastest measured" and str(path["threads"]) in path["seconds_per_evaluation"]
    assert "refit" in timed.extra["threads"] and timed.top1 == small.top1
    forced = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=(0.1,), threads=1))
    assert forced.extra["threads"]["path"] == {"threads": 1, "rule": "given"}
    with pytest.raises(ValueError, match="threads"):
        LogRegConfig(threads=0)


@pytest.mark.parametrize("given", [(10.0, 31.6227766, 100.0), (0.01, 0.0316227766, 0.1)], ids=["peak_below", "peak_above"])
def test_a_peak_beyond_the_given_Cs_is_flagged_then_found_by_extension(given):
    from benchmarks.perf.bench_linear_grid import make_features

    data = make_features(1500, 500, 128, 10)  # held-out top-1 over C = 10^-4..10^2 peaks at C = 1 only
    plain = logreg_probe(data.train_x, data.train_y, data.eval_x, data.eval_y, config=LogRegConfig(Cs=given, path_patience=None, path_extend=False, selection="holdout"))
    assert plain.extra["at_edge"] == (["C_low"] if given[0] > 1 else ["C_high"]) and plain.extra["extended"] == []
    grown = logreg_probe(data.train_x, data.train_y, data.eval_x, data.eval_y, config=LogRegConfig(Cs=given, selection="holdout"))
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
    with pytest.raises(ValueError, match="selection"):
        LogRegConfig(selection="loo")
    with pytest.raises(ValueError, match="folds"):
        LogRegConfig(folds=1)
    with pytest.raises(ValueError, match="choice_tolerance"):
        LogRegConfig(choice_tolerance=-0.5)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="5-fold selection needs at least 5 train rows"):
        logreg_probe(x, torch.tensor([0, 1, 0, 1]), x, torch.tensor([0, 1, 0, 1]))
    assert fits_in_memory(50_000, 768, 100)
    assert not fits_in_memory(1_281_167, 1152, 1000, budget_bytes=1 << 30)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu(problem):
    tx, ty, ex, ey = problem
    cpu = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=CS))
    gpu = logreg_probe(tx, ty, ex, ey, config=LogRegConfig(Cs=CS), device="cuda")
    assert gpu.selected == cpu.selected and abs(gpu.top1 - cpu.top1) <= 0.3


def test_the_benchmarks_busy_process_spins_while_active_and_is_gone_after():
    import psutil

    from benchmarks.perf.bench_linear_grid import busy_core

    me = psutil.Process()
    before = {child.pid for child in me.children()}
    with busy_core(True):
        (child,) = [c for c in me.children() if c.pid not in before]
        assert child.cpu_percent(interval=0.3) > 20.0  # spinning
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    with busy_core(False):
        assert {c.pid for c in me.children()} == before
