"""Exact linear probe: scikit-learn's L2 multinomial logistic regression, solved full-batch with L-BFGS in torch.

The objective is scikit-learn ``LogisticRegression``'s (L2, multinomial softmax, bias not penalised)::

    f(W, b) = mean_i CE(x_i W + b, y_i) + ||W||^2 / (2 * C * n)

on standardised features (mean/std of the rows being fitted), minimised with full-batch L-BFGS
(strong-Wolfe line search, history 10, stopped when the largest gradient entry is below ``tol`` as
scipy's ``pgtol`` does for scikit-learn's ``lbfgs`` solver, or after ``max_iter`` iterations).

Choosing C (``LogRegConfig.selection``):

- ``kfold`` (``auto``, the default, below ``kfold_below_rows`` = 10,000 train rows): stratified k-fold
  cross-validation over train (``folds``, default 5). Each fold fits the C path on its fit rows and
  predicts its held-out rows; a C's score is the held-out top-1 pooled over the folds, so every train row
  is held out once. This is scikit-learn's ``LogisticRegressionCV`` procedure (a warm-started path per
  fold), with the choice below.
- ``holdout`` (``auto`` from 10,000 train rows): one stratified held-out part of train
  (``holdout_fraction``, 10%), the first maximum: scikit-learn's standard recipe (``LogisticRegression``
  per C, :func:`probes.linear.sklearn_logreg_probe`). There the held-out part holds over 1,000 items, so
  its noise is small and the choice is the protocol's recipe exactly. (Cost is not the reason: on 8000 x
  384 features with 50 classes 5 folds took 12.9 s against the holdout's 15.4 s, whose frozen warm starts
  are refitted from zeros.)

Why k-fold: with a small train set one held-out part is a few hundred items, its top-1 moves by one item
(~1 point) between neighbouring C, and which C wins depends on which rows were held out. On MobileNetV2
features of ``digits:size=224`` (1078 train rows: a 108-item held-out part) that rule on 8 C values gave
eval top-1 93.59 to 95.54 over 5 split seeds (issue 28). Pooling 5 folds scores every C on all 1078 rows.

1. *Path.* C runs from strong to weak regularisation (small to large); on every fold each fit is
   warm-started from that fold's previous solution. Under ``holdout`` a warm start that does not move
   (0 iterations: it already meets the stopping rule at the next C) or moves without changing a single
   held-out prediction is *frozen* and refitted from zeros (``extra["cold_checked"]``), so that each C's
   score is a from-zeros fit's, as scikit-learn's per-C fits are: with weak regularisation the stopping
   rule ``tol`` is loose in weight space, so where a warm-started fit stops depends on where it started.
   Under ``kfold`` the path stays warm-started, as ``LogisticRegressionCV``'s: a frozen fit scores as
   its predecessor, which is then chosen first, and refitting from zeros there cost 25-50% more
   iterations on the digits features above. The fold fits stop at a 10x looser gradient tolerance
   (``kfold_tol`` 1e-3): they only rank the C values, and the chosen C is refitted at ``refit_tol``. On those
   features that cut the path's iterations 2.2-2.6x and changed the val top-1 of no split seed.
2. *Stop.* The path stops after ``path_patience`` consecutive *drops* (default 2). A drop is a held-out
   top-1 below the best so far by more than the held-out noise: the binomial standard error of the best
   score on all held-out items, and at least one item (:func:`holdout_noise`). A tie, or any value within
   the noise, is not a drop and resets the count. Drops count only once the best stands above the first
   (most regularised) score by more than the noise: held-out top-1 can dip at strong regularisation
   before it rises (a 300-row problem went 26.0, 24.0, 23.0, 22.0, then up to 41), and on 5 pooled folds
   the noise is small enough for that dip to look like the fall after a peak. ``path_patience=None``
   fits every C.
3. *Edges.* While the best score sits on an edge of the path and beats its neighbour outright, the path
   grows one step beyond it (``path_extend``, at most ``max_path_extensions`` values). A value beyond the
   given grid competes only when it beats every grid value outright.
4. *Choice* (:func:`select_c`). Under ``kfold``, the strongest regularisation whose score is within
   ``choice_tolerance`` held-out noises (default 0.5) of the best: a weaker C that is better only by
   noise is not preferred. Half a noise, not the one-standard-error rule's one: on the curve's steep,
   strongly regularised side one noise reached C values 1-3.5 points of eval top-1 below the best, and
   their choice moved with the split seed (spread over 5 seeds 1.6-3.5 points on 3 of 4 synthetic sets,
   1.1 on MobileNetV2 features of digits at 64 px, against 0-0.9 at half a noise and 0.1-0.9 at the
   first maximum; benchmarks/perf/README.md).
   Under ``holdout``, the first maximum (the strongest regularisation among exact ties), as scikit-learn.
   Where every score ties, the grid's smallest C is chosen, never a value beyond it.
5. *Refit.* The chosen C is refitted on all of train from zeros, as scikit-learn refits (a warm start from
   a fit-part solution stops elsewhere when regularisation is weak: 2.5 points of eval top-1 on one
   MobileNetV2 feature set, benchmarks/perf/README.md), to ``refit_tol``, ten times tighter than the
   path's ``tol``: at ``tol`` the refit's end point moved with the order of the train rows (which the
   split seed sets) and the thread count, by one eval image in five of the 26 (feature set, C) pairs
   measured; at ``refit_tol`` in none of the C values the choice lands on, for 1.3-1.6x the refit's
   iterations (benchmarks/perf/README.md).

Memory: one float32 copy of train, standardised with the all-train mean/std and ordered fold by fold;
every fold's fit rows are two views of it, and the fold's own standardisation (the mean/std of its fit
rows, as scikit-learn standardises what it fits) is a per-dimension affine map folded into the weights
(:class:`_Objective`), so k folds cost no extra copies.

Re-checking every C within the noise of the best from zeros was tried and dropped: fits from zeros in
torch and in scipy stop at different points too, so it moved as many choices away from scikit-learn's as
towards them, at up to 10 extra fits.

Threads: on the CPU a small problem (a fold's fit rows x dim x classes below ``SINGLE_THREAD_WORK``) runs on one
thread; a larger one times one loss-and-gradient evaluation under all, all-but-one and one thread and
runs on the fastest (:func:`probes.threads.fastest_threads`), re-timed for the refit, so a core kept
busy by another process cannot stall the solver (``extra["threads"]``).

The standardised train matrix is held in memory on ``device`` (float32): this solver is for features
that fit there; :func:`probes.linear.linear_probe` (minibatch heads) streams rows and is the choice when
they do not (see :func:`fits_in_memory`).
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probes.linear import (
    ArrayLike,
    ClassificationResult,
    make_result,
    stratified_holdout,
    topk_correct,
    validate_classification_inputs,
)
from probes.standardize import feature_moments
from probes.threads import SINGLE_THREAD_WORK, fastest_threads

# Rows per matmul when the loss and gradient are accumulated: bounds the (rows, classes) logits block.
_CHUNK_ROWS = 65536
# Below this many classes the objective's matmuls are laid out classes-first (see _Objective).
_CLASS_MAJOR_BELOW = 16
# Default budget for the in-memory solver's standardised copy of train (bytes), see fits_in_memory.
DEFAULT_MEMORY_BUDGET = 8 << 30


SELECTIONS = ("auto", "kfold", "holdout")
# scikit-learn's 1e-4..1e2 in half-decade steps: the grid of scikit-learn's standard recipe (13 C).
DEFAULT_CS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-4, 2, 13))


@dataclass
class LogRegConfig:
    """Regularisation path, choice of C and solver settings of :func:`logreg_probe` (module docstring).

    ``Cs`` are scikit-learn's inverse regularisation strengths (sorted ascending before use).
    ``selection``: ``kfold`` scores each C by the held-out top-1 pooled over ``folds`` stratified folds
    of train (every train row held out once); ``holdout`` by one stratified held-out part of train
    (``holdout_fraction``), scikit-learn's standard recipe; ``auto``: ``kfold`` for fewer than
    ``kfold_below_rows`` train rows, else ``holdout``. ``choice_tolerance`` (``kfold`` only): the chosen
    C is the strongest regularisation whose held-out top-1 is within this many held-out noises
    (:func:`holdout_noise` of the best) of the best; 0 chooses the first maximum, as scikit-learn's sweep.
    ``kfold_tol``: the gradient tolerance of the fold fits, which only rank the C values; ``refit_tol``:
    the tolerance of the chosen C's refit on all of train (module docstring, step 5). ``max_iter``/``tol``/``history_size`` mirror scikit-learn's lbfgs (``max_iter``, ``tol`` on the
    largest gradient entry, scipy's ``maxcor``). ``path_patience``: stop the path after this many
    consecutive drops of held-out top-1 beyond the held-out noise (``None``: fit every ``C``).
    ``path_extend``: while the held-out peak is the smallest ``C`` (or the largest, with nothing left
    unfitted) and beats its neighbour outright, fit one more value a path step (the edge's ratio to its
    neighbour) beyond it and select again, at most ``max_path_extensions`` times per run; what was added
    is in ``extra["extended"]``.
    """

    Cs: tuple[float, ...] = DEFAULT_CS
    selection: str = "auto"
    folds: int = 5
    kfold_below_rows: int = 10_000
    holdout_fraction: float = 0.1
    choice_tolerance: float = 0.5
    kfold_tol: float = 1e-3
    refit_tol: float = 1e-5
    seed: int = 0
    max_iter: int = 1000
    tol: float = 1e-4
    history_size: int = 10
    standardize: bool = True
    path_patience: int | None = 2
    path_extend: bool = True
    max_path_extensions: int = 3
    threads: int | None = None  # CPU threads of the solver; None: chosen per problem (module docstring)

    def __post_init__(self) -> None:
        if not self.Cs or any(c <= 0 for c in self.Cs):
            raise ValueError(f"LogRegConfig: Cs must be a non-empty sequence of positive values, got {self.Cs}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"LogRegConfig: selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.folds < 2 or self.kfold_below_rows < 0:
            raise ValueError(f"LogRegConfig: folds must be >= 2 and kfold_below_rows >= 0, got {self.folds} and {self.kfold_below_rows}")
        if self.choice_tolerance < 0:
            raise ValueError(f"LogRegConfig: choice_tolerance must be >= 0 (held-out noises), got {self.choice_tolerance}")
        if self.max_iter < 1 or min(self.tol, self.kfold_tol, self.refit_tol) <= 0 or self.history_size < 1:
            raise ValueError("LogRegConfig: max_iter and history_size must be >= 1, tol, kfold_tol and refit_tol > 0")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"LogRegConfig: holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.max_path_extensions < 0:
            raise ValueError(f"LogRegConfig: max_path_extensions must be >= 0, got {self.max_path_extensions}")
        if self.path_patience is not None and self.path_patience < 1:
            raise ValueError(f"LogRegConfig: path_patience must be >= 1 or None, got {self.path_patience}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"LogRegConfig: threads must be >= 1 or None (chosen per problem), got {self.threads}")


def fits_in_memory(n_rows: int, dim: int, n_classes: int, budget_bytes: int = DEFAULT_MEMORY_BUDGET) -> bool:
    """Whether the full-batch solver's float32 working set (train copy + one logits block) fits ``budget_bytes``."""
    working = 4 * (n_rows * dim + 2 * min(n_rows, _CHUNK_ROWS) * n_classes + 8 * dim * n_classes)
    return working <= budget_bytes


def _standardized(x: Tensor, rows: Tensor, mean: Tensor, std: Tensor, device: torch.device) -> Tensor:
    out = torch.empty(rows.numel(), x.shape[1], device=device)
    for start in range(0, rows.numel(), _CHUNK_ROWS):
        chunk = x[rows[start : start + _CHUNK_ROWS]].to(device=device, dtype=torch.float32)
        out[start : start + chunk.shape[0]] = (chunk - mean) / std
    return out


class _Objective:
    """Loss and analytic gradient of the L2-regularised mean cross-entropy over the rows of ``blocks``
    ((features, labels) pairs, views of one matrix), on the features ``x * scale + shift`` (per
    dimension; ``None``: ``x`` as it is). The affine map lets one standardised copy of train serve every
    fold: a fold's own standardisation is the all-train one rescaled (:func:`_fold`)."""

    def __init__(self, blocks: Sequence[tuple[Tensor, Tensor]], n_classes: int, affine: tuple[Tensor, Tensor] | None = None) -> None:
        self.blocks, self.n_classes, self.affine = [b for b in blocks if b[0].shape[0]], n_classes, affine
        self.n_rows = sum(b[0].shape[0] for b in self.blocks)
        self.dim = blocks[0][0].shape[1]

    def effective(self, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """(weight, bias) acting on the stored features: ``x @ W' + b'`` equals ``(x * scale + shift) @ W + b``."""
        if self.affine is None:
            return weight, bias
        scale, shift = self.affine
        return weight * scale[:, None], bias + shift @ weight

    def __call__(self, weight: Tensor, bias: Tensor, lam: float) -> tuple[float, Tensor, Tensor]:
        n = self.n_rows
        w_eff, b_eff = self.effective(weight, bias)
        # Few classes: the matmuls put the classes first (K x rows, K x dim outputs). MKL's sgemm with
        # fewer than 16 output columns ran 4-6x slower than this layout here (768 dims, 2048 rows, 1 thread).
        class_major = self.n_classes < _CLASS_MAJOR_BELOW
        loss = 0.0
        grad_w = torch.zeros(self.n_classes, self.dim, device=weight.device) if class_major else torch.zeros_like(weight)
        grad_b = torch.zeros_like(bias)
        for x, y in self.blocks:
            for start in range(0, x.shape[0], _CHUNK_ROWS):
                xb, yb = x[start : start + _CHUNK_ROWS], y[start : start + _CHUNK_ROWS]
                logits = torch.addmm(b_eff[:, None], w_eff.T, xb.T).T if class_major else torch.addmm(b_eff, xb, w_eff)
                lse = torch.logsumexp(logits, dim=1, keepdim=True)
                loss += float((lse.squeeze(1) - logits.gather(1, yb[:, None]).squeeze(1)).sum(dtype=torch.float64))
                # d CE / d logits = softmax - onehot
                prob = logits.sub_(lse).exp_()
                prob[torch.arange(yb.numel(), device=prob.device), yb] -= 1.0
                if class_major:
                    grad_w.addmm_(prob.T, xb)
                else:
                    grad_w.addmm_(xb.T, prob)
                grad_b += prob.sum(0)
        if class_major:
            grad_w = grad_w.T.contiguous()
        if self.affine is not None:  # chain rule through W' = scale * W, b' = b + shift @ W
            scale, shift = self.affine
            grad_w.mul_(scale[:, None]).addr_(shift, grad_b)
        grad_w.div_(n).add_(weight, alpha=lam)
        grad_b.div_(n)
        loss = loss / n + 0.5 * lam * float(weight.double().square().sum())
        return loss, grad_w, grad_b


def _minimize(
    objective: _Objective, weight: Tensor, bias: Tensor, lam: float, config: LogRegConfig
) -> tuple[int, bool, float]:
    """Minimise in place from the given start; returns (iterations, converged, final objective)."""
    params = [weight.requires_grad_(False), bias.requires_grad_(False)]
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=config.max_iter,
        max_eval=config.max_iter * 5 // 4,
        tolerance_grad=config.tol,
        tolerance_change=1e-12,
        history_size=config.history_size,
        line_search_fn="strong_wolfe",
    )
    last = {"loss": float("nan"), "max_grad": float("inf")}

    def closure() -> Tensor:
        loss, grad_w, grad_b = objective(weight, bias, lam)
        weight.grad, bias.grad = grad_w, grad_b
        last["loss"] = loss
        last["max_grad"] = max(float(grad_w.abs().max()), float(grad_b.abs().max()))
        return torch.tensor(loss, dtype=torch.float64)

    optimizer.step(closure)
    n_iter = int(optimizer.state[optimizer._params[0]].get("n_iter", 0))
    return n_iter, last["max_grad"] <= config.tol, last["loss"]


@contextlib.contextmanager
def _solver_threads(objective: _Objective, device: torch.device, record: dict[str, Any], stage: str, forced: int | None = None) -> Iterator[None]:
    """Run the block on the thread count this problem should use on the CPU (no change on a GPU): one
    thread for a small problem (its matmuls are too small to share), else the count whose
    loss-and-gradient evaluation times fastest now (:func:`probes.threads.fastest_threads`). What was
    chosen, and the timings, go to ``record[stage]``."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    if forced is not None:
        count = forced
        record[stage] = {"threads": count, "rule": "given"}
    elif objective.n_rows * objective.dim * objective.n_classes < SINGLE_THREAD_WORK:
        count = 1
        record[stage] = {"threads": 1, "rule": "small problem"}
    else:
        weight, bias = torch.zeros(objective.dim, objective.n_classes, device=device), torch.zeros(objective.n_classes, device=device)
        count, medians = fastest_threads(lambda: objective(weight, bias, 1e-3))
        record[stage] = {"threads": count, "rule": "fastest measured", "seconds_per_evaluation": {str(k): round(v, 6) for k, v in medians.items()}}
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def holdout_noise(score: float, n_holdout: int) -> float:
    """The held-out noise, in points, of a top-1 of ``score`` percent on ``n_holdout`` items: the
    binomial standard error ``100 * sqrt(p (1 - p) / n)``, and at least one item (``100 / n``)."""
    p = min(max(score / 100.0, 0.0), 1.0)
    return max(100.0 * math.sqrt(p * (1.0 - p) / n_holdout), 100.0 / n_holdout)


# ------------------------------------------------------------------ folds: one standardised copy of train, split in blocks


@dataclass
class _Fold:
    """One split of train for choosing C: the ``objective`` over its fit rows and its held-out rows
    (features as stored, labels), scored through the objective's affine map."""

    objective: _Objective
    held_x: Tensor
    held_y: Tensor

    def predict(self, weight: Tensor, bias: Tensor) -> Tensor:
        w_eff, b_eff = self.objective.effective(weight, bias)
        return torch.cat([torch.addmm(b_eff, self.held_x[s : s + _CHUNK_ROWS], w_eff).argmax(1) for s in range(0, self.held_x.shape[0], _CHUNK_ROWS)])


def kfold_assignment(labels: Tensor, folds: int, seed: int) -> Tensor:
    """Fold (0..folds-1) of every row, stratified: each class's rows, shuffled (seeded), are dealt round
    the folds in turn, continuing where the previous class stopped, so every fold holds about 1/folds of
    each class and fold sizes differ by at most one row. Deterministic for a given ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    assignment = torch.empty(labels.numel(), dtype=torch.long)
    dealt = 0
    for cls in torch.unique(labels):
        rows = torch.nonzero(labels == cls).flatten()
        rows = rows[torch.randperm(rows.numel(), generator=generator)]
        assignment[rows] = (torch.arange(rows.numel()) + dealt) % folds
        dealt += rows.numel()
    return assignment


def _held_out_blocks(labels: Tensor, config: LogRegConfig) -> tuple[Tensor, list[tuple[int, int]]]:
    """Train rows reordered so that each fold's held-out rows are one block, and those blocks' (start, stop)."""
    if config.selection == "holdout":
        fit_rows, hold_rows = stratified_holdout(labels, config.holdout_fraction, config.seed)
        return torch.cat([hold_rows, fit_rows]), [(0, hold_rows.numel())]
    if labels.numel() < config.folds:
        raise ValueError(f"logreg_probe: {config.folds}-fold selection needs at least {config.folds} train rows, got {labels.numel()}; "
                         "use fewer folds or selection='holdout'")
    assignment = kfold_assignment(labels, config.folds, config.seed)
    order = torch.argsort(assignment, stable=True)
    ends = torch.bincount(assignment, minlength=config.folds).cumsum(0).tolist()
    return order, list(zip([0, *ends[:-1]], ends))


def _folds(tx: Tensor, ty: Tensor, n_classes: int, config: LogRegConfig, device: torch.device) -> tuple[Tensor, Tensor, list[_Fold], tuple[Tensor, Tensor]]:
    """The one float32 copy of train on ``device``, standardised with the all-train (mean, std) and ordered so
    that each fold's held-out rows are one block, its labels, and the folds over it (views, no copies).
    A fold's fit rows use their own mean/std, as scikit-learn standardises the rows it fits; on the
    stored features that is an affine map per dimension: ``(x_raw - m_f) / s_f = x * (s / s_f) + (m - m_f) / s_f``."""
    order, blocks = _held_out_blocks(ty, config)
    mean, std = feature_moments(tx, None, device) if config.standardize else (torch.zeros(tx.shape[1], device=device), torch.ones(tx.shape[1], device=device))
    x, y = _standardized(tx, order, mean, std, device), ty[order].to(device)
    folds = []
    for start, stop in blocks:
        affine = None
        if config.standardize:
            fit_mean, fit_std = feature_moments(tx, torch.cat([order[:start], order[stop:]]), device)
            affine = (std / fit_std, (mean - fit_mean) / fit_std)
        objective = _Objective([(x[:start], y[:start]), (x[stop:], y[stop:])], n_classes, affine)
        folds.append(_Fold(objective, x[start:stop], y[start:stop]))
    return x, y, folds, (mean, std)


# ------------------------------------------------------------------ the path: every fold at each C, pooled held-out top-1


def _fit_one(objective: _Objective, c: float, config: LogRegConfig, start: dict[str, Any] | None) -> dict[str, Any]:
    """One fit at ``c`` from ``start`` (an earlier fit's weights and bias) or from zeros (``None``)."""
    t0 = time.perf_counter()
    device = objective.blocks[0][0].device
    weight = torch.zeros(objective.dim, objective.n_classes, device=device) if start is None else start["weight"].clone()
    bias = torch.zeros(objective.n_classes, device=device) if start is None else start["bias"].clone()
    n_iter, converged, loss = _minimize(objective, weight, bias, 1.0 / (c * objective.n_rows), config)
    return {"n_iter": n_iter, "converged": converged, "objective": loss, "weight": weight, "bias": bias, "seconds": time.perf_counter() - t0}


def _fit_fold(fold: _Fold, c: float, config: LogRegConfig, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Fit one fold at ``c``, warm-started from ``previous`` (the fold's fit at the last C) or from zeros,
    and score its held-out rows. Under ``holdout`` selection a frozen warm start (0 iterations, or no
    held-out prediction changed) is refitted from zeros; ``frozen_iter`` then says how far the warm start went."""
    fit = _fit_one(fold.objective, c, config, previous)
    fit["predictions"] = fold.predict(fit["weight"], fit["bias"])
    frozen = previous is not None and (fit["n_iter"] == 0 or torch.equal(fit["predictions"], previous["predictions"]))
    if frozen and config.selection == "holdout":
        cold = _fit_one(fold.objective, c, config, None)
        cold.update(predictions=fold.predict(cold["weight"], cold["bias"]), frozen_iter=fit["n_iter"], seconds=fit["seconds"] + cold["seconds"])
        cold["frozen_correct"] = int((fit["predictions"] == fold.held_y).sum())
        fit = cold
    fit["correct"] = int((fit["predictions"] == fold.held_y).sum())
    return fit


def _fit_c(folds: Sequence[_Fold], c: float, config: LogRegConfig, previous: dict[str, Any] | None) -> dict[str, Any]:
    """A path entry: every fold fitted at ``c`` (each warm-started from its own fit in ``previous``) and
    the held-out top-1 pooled over the folds (percent of all held-out rows)."""
    fits = [_fit_fold(fold, c, config, None if previous is None else previous["fits"][i]) for i, fold in enumerate(folds)]
    n_held = sum(fold.held_y.numel() for fold in folds)
    frozen = [i for i, fit in enumerate(fits) if "frozen_iter" in fit]
    entry = {"C": float(c), "score": sum(fit["correct"] for fit in fits) / n_held * 100.0, "fits": fits,
             "n_iter": sum(fit["n_iter"] for fit in fits), "converged": all(fit["converged"] for fit in fits),
             "seconds": sum(fit["seconds"] for fit in fits)}
    if frozen:
        warm_correct = sum(fits[i].get("frozen_correct", fits[i]["correct"]) for i in range(len(fits)))
        entry["cold_checked"] = {"why": "frozen", "folds": frozen, "warm_iter": sum(fits[i]["frozen_iter"] for i in frozen),
                                 "warm_top1": warm_correct / n_held * 100.0}
    return entry


def _release(entry: dict[str, Any]) -> None:
    """Drop an entry's weights and predictions once no later fit starts from it (memory: folds x dim x classes)."""
    for fit in entry.get("fits", ()):
        for key in ("weight", "bias", "predictions"):
            fit.pop(key, None)


FitC = Callable[[float, "dict[str, Any] | None"], "dict[str, Any]"]  # (C, entry to warm-start from or None) -> entry


def _fit_path(fit_c: FitC, cs: Sequence[float], patience: int | None, n_holdout: int) -> list[dict[str, Any]]:
    """Fit every C in ``cs`` in order, each warm-started from the last (the first from zeros). With
    ``patience``, the path stops after that many consecutive drops beyond :func:`holdout_noise` of the
    best score so far (a tie, or a dip within the noise, resets the count), counted only once the best
    stands above the first score by more than the noise: a dip near the strongest regularisation,
    before any real rise, does not stop the path."""
    path: list[dict[str, Any]] = []
    best, drops = -1.0, 0
    for c in cs:
        path.append(fit_c(c, path[-1] if path else None))
        if len(path) > 1:
            _release(path[-2])
        if patience is not None:
            best = max(best, path[-1]["score"])
            noise = holdout_noise(best, n_holdout)
            risen = best > path[0]["score"] + noise
            drops = drops + 1 if risen and path[-1]["score"] < best - noise else 0
            if drops >= patience:
                break
    return path


def _extend_path(path: list[dict[str, Any]], cs: list[float], config: LogRegConfig, fit_c: FitC) -> list[float]:
    """Grow ``path`` (in place, kept sorted by C) beyond an edge that holds the held-out peak outright
    (strictly above its neighbour); returns the Cs added. ``fit_c(c, start)`` fits one C from ``start``
    (an entry) or from zeros (``None``)."""
    added: list[float] = []
    if not config.path_extend or len(cs) < 2:
        return added
    while len(added) < config.max_path_extensions:
        scores = [entry["score"] for entry in path]
        best = int(np.argmax(scores))
        if best == 0 and scores[0] > scores[1]:  # stronger regularisation: cheap, fitted from zeros as the path's first value is
            c = path[0]["C"] * path[0]["C"] / path[1]["C"]
            path.insert(0, entry := fit_c(c, None))
        elif best == len(path) - 1 and path[-1]["C"] >= cs[-1] and scores[-1] > scores[-2]:  # weaker, warm-started from the edge
            c = path[-1]["C"] * path[-1]["C"] / path[-2]["C"]
            path.append(entry := fit_c(c, path[-1]))
            _release(path[-2])
        else:
            break
        entry["extended"] = True
        added.append(c)
        if entry["score"] <= scores[best]:  # no better beyond the edge: the peak is (or ties with) the old edge
            break
    return added


def select_c(path: Sequence[dict[str, Any]], margin: float = 0.0) -> int:
    """Index of the chosen entry: the first (strongest regularisation) whose held-out top-1 is within
    ``margin`` points of the best. ``margin`` 0 is scikit-learn's sweep (the first maximum). An extended
    value (beyond the grid) competes only when it beats every grid value outright, so where every score
    ties the grid's smallest C is chosen, never a value beyond it."""
    scores = [entry["score"] for entry in path]
    grid_best = max(s for s, entry in zip(scores, path) if not entry.get("extended"))
    candidates = [i for i, entry in enumerate(path) if not entry.get("extended") or scores[i] > grid_best]
    best = max(scores[i] for i in candidates)
    return next(i for i in candidates if scores[i] >= best - margin)


# ------------------------------------------------------------------ the probe


def _choose_c(folds: list[_Fold], config: LogRegConfig, threads: dict[str, Any]) -> tuple[list[dict[str, Any]], int, list[float]]:
    """Fit the C path on every fold and choose (:func:`select_c`: within ``choice_tolerance`` held-out
    noises of the best under k-fold, the first maximum under holdout); returns (path, chosen index, Cs
    added beyond the grid)."""
    n_held = sum(fold.held_y.numel() for fold in folds)
    cs = sorted(float(c) for c in config.Cs)
    fold_config = replace(config, tol=config.kfold_tol) if config.selection == "kfold" else config
    fit_c = lambda c, start: _fit_c(folds, c, fold_config, start)
    with _solver_threads(folds[0].objective, folds[0].held_x.device, threads, "path", config.threads):
        path = _fit_path(fit_c, cs, config.path_patience, n_held)
        extended = _extend_path(path, cs, config, fit_c)
    for entry in path:
        _release(entry)
    tolerance = config.choice_tolerance if config.selection == "kfold" else 0.0
    return path, select_c(path, tolerance * holdout_noise(max(entry["score"] for entry in path), n_held)), extended


def _refit(x: Tensor, y: Tensor, n_classes: int, c: float, config: LogRegConfig, threads: dict[str, Any]) -> dict[str, Any]:
    """The chosen C fitted on all of train from zeros, as scikit-learn refits (a warm start stops elsewhere
    when regularisation is weak: the tolerance is loose in weight space), to ``refit_tol``."""
    objective = _Objective([(x, y)], n_classes)
    with _solver_threads(objective, x.device, threads, "refit", config.threads):
        return _fit_one(objective, c, replace(config, tol=config.refit_tol), None)


def _evaluate(ex: Tensor, ey: Tensor, mean: Tensor, std: Tensor, weight: Tensor, bias: Tensor, n_classes: int) -> tuple[Tensor, Tensor | None]:
    """Per-item top-1 (and top-5, with at least 5 classes) correctness on eval, a chunk at a time."""
    top1, top5 = [], []
    for start in range(0, ex.shape[0], _CHUNK_ROWS):
        chunk = ex[start : start + _CHUNK_ROWS].to(device=weight.device, dtype=torch.float32)
        logits = torch.addmm(bias, (chunk - mean) / std, weight)
        target = ey[start : start + _CHUNK_ROWS].to(weight.device)
        top1.append(topk_correct(logits, target, 1).cpu())
        top5.append(topk_correct(logits, target, 5).cpu())
    return torch.cat(top1), torch.cat(top5) if n_classes >= 5 else None


def _path_extra(path: list[dict[str, Any]], best: int, extended: list[float], cs: Sequence[float], n_held: int) -> dict[str, Any]:
    """What the result records of the path: per-C pooled held-out top-1, iterations, convergence, time,
    the edges, the values added or skipped, and the frozen warm starts refitted from zeros."""
    key = [f"C={entry['C']:.3g}" for entry in path]
    not_fitted = [c for c in cs if c > max(entry["C"] for entry in path if not entry.get("extended"))]
    at_edge = (["C_low"] if best == 0 else ["C_high"] if best == len(path) - 1 and not not_fitted else []) if len(path) > 1 else []
    return {
        "holdout_top1": dict(zip(key, (entry["score"] for entry in path))),
        "n_iter": dict(zip(key, (entry["n_iter"] for entry in path))),
        "converged": dict(zip(key, (entry["converged"] for entry in path))),
        "fit_seconds": [entry["seconds"] for entry in path],
        "at_edge": at_edge,
        "extended": [f"C={c:.3g}" for c in extended],  # beyond the given Cs, while the peak sat on an edge
        "not_fitted": [f"C={c:.3g}" for c in not_fitted],  # after path_patience drops beyond the held-out noise
        "cold_checked": {k: entry["cold_checked"] for k, entry in zip(key, path) if "cold_checked" in entry},  # frozen warm starts
        "holdout_noise": holdout_noise(path[best]["score"], n_held),
        "n_holdout": n_held,
    }


def logreg_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    eval_x: ArrayLike,
    eval_y: ArrayLike,
    *,
    config: LogRegConfig | None = None,
    device: str | torch.device = "cpu",
) -> ClassificationResult:
    """Exact linear probe: scikit-learn's L2 multinomial logistic regression, solved with full-batch L-BFGS.

    ``C`` chosen by held-out top-1 on train (``config.selection``: k-fold, pooled over the folds, or one
    stratified held-out part) along a warm-started path (strong to weak regularisation), the chosen C
    refitted on all of train from zeros, reported as top-1/top-5 accuracy (percent) on eval. Features
    may be any float dtype (cast to float32 on ``device`` a chunk at a time). ``selected`` holds ``C``;
    ``extra`` the path (held-out top-1, iterations, convergence, seconds per ``C``), see the module docstring.
    """
    config = config or LogRegConfig()
    started = time.perf_counter()
    tx, ty, ex, ey, classes = validate_classification_inputs(train_x, train_y, eval_x, eval_y)
    n_classes = classes.numel()
    if config.selection == "auto":  # k-fold where one held-out part is small and noisy (module docstring)
        config = replace(config, selection="kfold" if tx.shape[0] < config.kfold_below_rows else "holdout")
    x, y, folds, (mean, std) = _folds(tx, ty, n_classes, config, torch.device(device))
    threads: dict[str, Any] = {}
    path, best, extended = _choose_c(folds, config, threads)
    path_seconds = time.perf_counter() - started
    refit = _refit(x, y, n_classes, path[best]["C"], config, threads)
    n_fit, n_held = [fold.objective.n_rows for fold in folds], sum(fold.held_y.numel() for fold in folds)
    del x, y, folds
    top1, top5 = _evaluate(ex, ey, mean, std, refit["weight"], refit["bias"], n_classes)
    return make_result(
        "logreg_lbfgs", top1, top5, seed=config.seed,
        selected={"C": path[best]["C"], "max_iter": config.max_iter}, selection_score=path[best]["score"], n_tried=len(path),
        extra={
            "solver": "lbfgs_full_batch",
            "selection": config.selection if config.selection == "holdout" else f"{config.folds}-fold",
            **_path_extra(path, best, extended, sorted(config.Cs), n_held),
            "threads": threads,
            "n_fit": n_fit,  # rows each fold fits
            "path_seconds": path_seconds,
            "refit_iter": refit["n_iter"], "refit_converged": refit["converged"], "refit_seconds": refit["seconds"],
            "total_seconds": time.perf_counter() - started,
            "config": asdict(config),
        },
    )
