"""Exact linear probe: scikit-learn's L2 multinomial logistic regression, solved full-batch with L-BFGS in torch.

The objective is scikit-learn ``LogisticRegression``'s (L2, multinomial softmax, bias not penalised)::

    f(W, b) = mean_i CE(x_i W + b, y_i) + ||W||^2 / (2 * C * n)

on standardised features (mean/std of the rows being fitted), minimised with full-batch L-BFGS
(strong-Wolfe line search, history 10, stopped when the largest gradient entry is below ``tol`` as
scipy's ``pgtol`` does for scikit-learn's ``lbfgs`` solver, or after ``max_iter`` iterations). The
regularisation path runs from strong to weak (small to large ``C``), each fit warm-started from the
previous solution, on the fit part of a stratified split of train; ``C`` is chosen by top-1 on the
held-out part (first maximum, i.e. the strongest regularisation among ties, as
:func:`probes.linear.sklearn_logreg_probe` does) and the model is refitted on all of train. The path
stops ``path_patience`` values after the held-out peak (default 2): the weakly regularised tail is the
costly part (iterations grow with ``C``; 60% of a 13-value sweep at 50k x 768 x 100), and skipping it
changes the choice only if held-out top-1 rises again after two successive drops (``path_patience=None``
fits every value). A warm start that already meets the stopping rule at the next ``C`` (small steps in
weak regularisation) counts 0 iterations: the same rule scikit-learn applies to its own start point.

The standardised train matrix is held in memory on ``device`` (float32): this solver is for features
that fit there; :func:`probes.linear.linear_probe` (minibatch heads) streams rows and is the choice when
they do not (see :func:`fits_in_memory`).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probes.linear import (
    DEFAULT_CS,
    ArrayLike,
    ClassificationResult,
    _SINGLE_THREAD_WORK,
    _at_most_threads,
    _moments,
    make_result,
    stratified_holdout,
    topk_correct,
    validate_classification_inputs,
)

# Rows per matmul when the loss and gradient are accumulated: bounds the (rows, classes) logits block.
_CHUNK_ROWS = 65536
# Default budget for the in-memory solver's standardised copy of train (bytes), see fits_in_memory.
DEFAULT_MEMORY_BUDGET = 8 << 30


@dataclass
class LogRegConfig:
    """Regularisation path and solver settings of :func:`logreg_probe`.

    ``Cs`` are scikit-learn's inverse regularisation strengths (sorted ascending before use);
    ``max_iter``/``tol``/``history_size`` mirror scikit-learn's lbfgs (``max_iter``, ``tol`` on the
    largest gradient entry, scipy's ``maxcor``). ``path_patience``: stop the path after this many
    consecutive ``C`` values without a better held-out top-1 (``None``: fit every ``C``). ``path_extend``:
    while the held-out peak is the smallest ``C`` (or the largest, with nothing left unfitted), fit one
    more value a path step (the edge's ratio to its neighbour) beyond it and select again, at most
    ``max_path_extensions`` times per run; what was added is in ``extra["extended"]``.
    """

    Cs: tuple[float, ...] = DEFAULT_CS
    holdout_fraction: float = 0.1
    seed: int = 0
    max_iter: int = 1000
    tol: float = 1e-4
    history_size: int = 10
    standardize: bool = True
    refit: bool = True
    path_patience: int | None = 2
    path_extend: bool = True
    max_path_extensions: int = 3

    def __post_init__(self) -> None:
        if not self.Cs or any(c <= 0 for c in self.Cs):
            raise ValueError(f"LogRegConfig: Cs must be a non-empty sequence of positive values, got {self.Cs}")
        if self.max_iter < 1 or self.tol <= 0 or self.history_size < 1:
            raise ValueError("LogRegConfig: max_iter and history_size must be >= 1 and tol > 0")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"LogRegConfig: holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.max_path_extensions < 0:
            raise ValueError(f"LogRegConfig: max_path_extensions must be >= 0, got {self.max_path_extensions}")
        if self.path_patience is not None and self.path_patience < 1:
            raise ValueError(f"LogRegConfig: path_patience must be >= 1 or None, got {self.path_patience}")


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
    """Loss and analytic gradient of the L2-regularised mean cross-entropy on a fixed matrix."""

    def __init__(self, x: Tensor, y: Tensor, n_classes: int) -> None:
        self.x, self.y, self.n_classes = x, y, n_classes

    def __call__(self, weight: Tensor, bias: Tensor, lam: float) -> tuple[float, Tensor, Tensor]:
        n = self.x.shape[0]
        loss = 0.0
        grad_w = torch.zeros_like(weight)
        grad_b = torch.zeros_like(bias)
        for start in range(0, n, _CHUNK_ROWS):
            xb, yb = self.x[start : start + _CHUNK_ROWS], self.y[start : start + _CHUNK_ROWS]
            logits = torch.addmm(bias, xb, weight)
            lse = torch.logsumexp(logits, dim=1, keepdim=True)
            loss += float((lse.squeeze(1) - logits.gather(1, yb[:, None]).squeeze(1)).sum(dtype=torch.float64))
            # d CE / d logits = softmax - onehot
            prob = logits.sub_(lse).exp_()
            prob[torch.arange(yb.numel(), device=prob.device), yb] -= 1.0
            grad_w.addmm_(xb.T, prob)
            grad_b += prob.sum(0)
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


def _fit_path(
    x: Tensor, y: Tensor, n_classes: int, cs: Sequence[float], config: LogRegConfig, score, start: tuple[Tensor, Tensor] | None = None
) -> list[dict[str, Any]]:
    """Fit every C in ``cs`` in order, warm-starting each from the last; ``score(weight, bias)`` rates a fit."""
    n, dim = x.shape
    weight = torch.zeros(dim, n_classes, device=x.device) if start is None else start[0].clone()
    bias = torch.zeros(n_classes, device=x.device) if start is None else start[1].clone()
    objective = _Objective(x, y, n_classes)
    path: list[dict[str, Any]] = []
    best, since_best = -1.0, 0
    for c in cs:
        t0 = time.perf_counter()
        n_iter, converged, loss = _minimize(objective, weight, bias, 1.0 / (c * n), config)
        entry = {"C": float(c), "n_iter": n_iter, "converged": converged, "objective": loss, "weight": weight.clone(), "bias": bias.clone()}
        entry["score"] = score(weight, bias) if score is not None else None
        entry["seconds"] = time.perf_counter() - t0
        path.append(entry)
        if entry["score"] is not None and config.path_patience is not None:
            if entry["score"] > best:
                best, since_best = entry["score"], 0
            else:
                since_best += 1
                if since_best >= config.path_patience:
                    break
    return path


def _extend_path(path: list[dict[str, Any]], cs: list[float], config: LogRegConfig, fit_one) -> list[float]:
    """Grow ``path`` (in place, kept sorted by C) beyond an edge holding the held-out peak; returns the Cs
    added. ``fit_one(c, start)`` fits one C from ``start`` (weights, bias) or from zeros (``None``)."""
    added: list[float] = []
    if not config.path_extend or len(cs) < 2:
        return added
    while len(added) < config.max_path_extensions:
        scores = [entry["score"] for entry in path]
        best = int(np.argmax(scores))
        if best == 0:  # stronger regularisation: cheap, fitted from zeros as the path's first value is
            c = path[0]["C"] * path[0]["C"] / path[1]["C"]
            path.insert(0, entry := fit_one(c, None))
        elif best == len(path) - 1 and path[-1]["C"] >= cs[-1]:  # weaker, warm-started from the edge
            c = path[-1]["C"] * path[-1]["C"] / path[-2]["C"]
            path.append(entry := fit_one(c, (path[-1]["weight"], path[-1]["bias"])))
        else:
            break
        added.append(c)
        if entry["score"] <= scores[best]:  # no better beyond the edge: the peak is (or ties with) the old edge
            break
    return added


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

    ``C`` chosen by top-1 on a stratified held-out part of train along a warm-started path (strong
    to weak regularisation), the chosen model refitted on all of train (warm start), reported as
    top-1/top-5 accuracy (percent) on eval. Features may be any float dtype (cast to float32 on
    ``device`` a chunk at a time). ``selected`` holds ``C``; ``extra`` the path (held-out top-1,
    iterations, convergence, seconds per ``C``).
    """
    config = config or LogRegConfig()
    device = torch.device(device)
    started = time.perf_counter()
    tx, ty, ex, ey, classes = validate_classification_inputs(train_x, train_y, eval_x, eval_y)
    n_classes, dim = classes.numel(), tx.shape[1]
    fit_rows, hold_rows = stratified_holdout(ty, config.holdout_fraction, config.seed)
    cs = sorted(float(c) for c in config.Cs)

    def moments(rows: Tensor) -> tuple[Tensor, Tensor]:
        if config.standardize:
            return _moments(tx, rows, device)
        return torch.zeros(dim, device=device), torch.ones(dim, device=device)

    mean, std = moments(fit_rows)
    x_fit = _standardized(tx, fit_rows, mean, std, device)
    y_fit = ty[fit_rows].to(device)
    x_hold = _standardized(tx, hold_rows, mean, std, device)
    y_hold = ty[hold_rows].to(device)

    def holdout_top1(weight: Tensor, bias: Tensor) -> float:
        hits = 0
        for start in range(0, x_hold.shape[0], _CHUNK_ROWS):
            logits = torch.addmm(bias, x_hold[start : start + _CHUNK_ROWS], weight)
            hits += int((logits.argmax(1) == y_hold[start : start + _CHUNK_ROWS]).sum())
        return hits / x_hold.shape[0] * 100.0

    # Small matmuls lose to OpenMP waits on shared cores (see probes.linear._train_heads).
    small = device.type == "cpu" and fit_rows.numel() * dim * n_classes < _SINGLE_THREAD_WORK
    with _at_most_threads(1 if small else torch.get_num_threads()):
        path = _fit_path(x_fit, y_fit, n_classes, cs, config, holdout_top1)
        extended = _extend_path(path, cs, config, lambda c, start: _fit_path(x_fit, y_fit, n_classes, [c], config, holdout_top1, start=start)[0])
    scores = [entry["score"] for entry in path]
    best = int(np.argmax(scores))
    chosen = path[best]
    not_fitted = [c for c in cs if c > path[-1]["C"]]
    path_seconds = time.perf_counter() - started
    del x_fit, x_hold

    weight, bias = chosen["weight"], chosen["bias"]
    refit_info: dict[str, Any] = {}
    if config.refit:
        t0 = time.perf_counter()
        all_rows = torch.arange(tx.shape[0])
        mean, std = moments(all_rows)
        x_all = _standardized(tx, all_rows, mean, std, device)
        with _at_most_threads(1 if small else torch.get_num_threads()):
            (refit,) = _fit_path(x_all, ty.to(device), n_classes, [chosen["C"]], config, None, start=(weight, bias))
        del x_all
        weight, bias = refit["weight"], refit["bias"]
        refit_info = {"refit_iter": refit["n_iter"], "refit_converged": refit["converged"], "refit_seconds": time.perf_counter() - t0}

    top1, top5 = [], []
    for start in range(0, ex.shape[0], _CHUNK_ROWS):
        chunk = ex[start : start + _CHUNK_ROWS].to(device=device, dtype=torch.float32)
        logits = torch.addmm(bias, (chunk - mean) / std, weight)
        target = ey[start : start + _CHUNK_ROWS].to(device)
        top1.append(topk_correct(logits, target, 1).cpu())
        top5.append(topk_correct(logits, target, 5).cpu())
    key = [f"C={entry['C']:.3g}" for entry in path]
    return make_result(
        "logreg_lbfgs",
        torch.cat(top1),
        torch.cat(top5) if n_classes >= 5 else None,
        seed=config.seed,
        selected={"C": chosen["C"], "max_iter": config.max_iter},
        selection_score=chosen["score"],
        n_tried=len(path),
        extra={
            "solver": "lbfgs_full_batch",
            "holdout_top1": dict(zip(key, scores)),
            "n_iter": dict(zip(key, (entry["n_iter"] for entry in path))),
            "converged": dict(zip(key, (entry["converged"] for entry in path))),
            "fit_seconds": [entry["seconds"] for entry in path],
            "at_edge": (["C_low"] if best == 0 else ["C_high"] if best == len(path) - 1 and not not_fitted else []) if len(path) > 1 else [],
            "extended": [f"C={c:.3g}" for c in extended],  # beyond the given Cs, while the peak sat on an edge
            "not_fitted": [f"C={c:.3g}" for c in not_fitted],  # after path_patience values without improvement
            "n_fit": int(fit_rows.numel()),
            "n_holdout": int(hold_rows.numel()),
            "path_seconds": path_seconds,
            "total_seconds": time.perf_counter() - started,
            "config": asdict(config),
            **refit_info,
        },
    )
