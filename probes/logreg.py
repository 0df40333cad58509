"""Exact linear probe: scikit-learn's L2 multinomial logistic regression, solved full-batch with L-BFGS in torch.

The objective is scikit-learn ``LogisticRegression``'s (L2, multinomial softmax, bias not penalised)::

    f(W, b) = mean_i CE(x_i W + b, y_i) + ||W||^2 / (2 * C * n)

on standardised features (mean/std of the rows being fitted), minimised with full-batch L-BFGS
(strong-Wolfe line search, history 10, stopped when the largest gradient entry is below ``tol`` as
scipy's ``pgtol`` does for scikit-learn's ``lbfgs`` solver, or after ``max_iter`` iterations).

Choosing C (on the fit part of a stratified split of train, scored by top-1 on the held-out part):

1. *Path.* C runs from strong to weak regularisation (small to large), each fit warm-started from the
   previous solution. A warm start that does not move (0 iterations: it already meets the stopping rule
   at the next C) or moves without changing a single held-out prediction is *frozen*: that C is refitted
   from zeros (``extra["cold_checked"]``). With weak regularisation the stopping rule ``tol`` is loose in
   weight space, so where a warm-started fit stops depends on where it started.
2. *Stop.* The path stops after ``path_patience`` consecutive *drops* (default 2). A drop is a held-out
   top-1 below the best so far by more than the held-out noise: the binomial standard error of the best
   score on the held-out items, and at least one item (:func:`holdout_noise`). A tie, or any value within
   the noise, is not a drop and resets the count. ``path_patience=None`` fits every C.
3. *Edges.* While the best score sits on an edge of the path and beats its neighbour outright, the path
   grows one step beyond it (``path_extend``, at most ``max_path_extensions`` values). A value beyond the
   given grid is chosen only when it beats every grid value outright.
4. *Choice.* The first maximum of held-out top-1 over the given grid (the strongest regularisation among
   exact ties), as :func:`probes.linear.sklearn_logreg_probe`. Where every score ties, that is the grid's
   smallest C, never a value beyond it.
5. *Refit.* The chosen C is refitted on all of train from zeros, as scikit-learn refits (a warm start from
   the fit-part solution stops elsewhere when regularisation is weak: 2.5 points of eval top-1 on one
   MobileNetV2 feature set, benchmarks/perf/README.md).

Re-checking every C within the noise of the best from zeros was tried and dropped: fits from zeros in
torch and in scipy stop at different points too, so it moved as many choices away from scikit-learn's as
towards them, at up to 10 extra fits.

Threads: on the CPU a small problem (fit rows x dim x classes below ``_SINGLE_THREAD_WORK``) runs on one
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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probes.linear import (
    DEFAULT_CS,
    ArrayLike,
    ClassificationResult,
    make_result,
    stratified_holdout,
    topk_correct,
    validate_classification_inputs,
)
from probes.standardize import feature_moments as _moments
from probes.threads import SINGLE_THREAD_WORK as _SINGLE_THREAD_WORK
from probes.threads import fastest_threads

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
    consecutive drops of held-out top-1 beyond the held-out noise (``None``: fit every ``C``; see the
    module docstring). ``path_extend``: while the held-out peak is the smallest ``C`` (or the largest,
    with nothing left unfitted) and beats its neighbour outright, fit one more value a path step (the
    edge's ratio to its neighbour) beyond it and select again, at most ``max_path_extensions`` times per
    run; what was added is in ``extra["extended"]``.
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
    threads: int | None = None  # CPU threads of the solver; None: chosen per problem (module docstring)

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


@contextlib.contextmanager
def _solver_threads(x: Tensor, y: Tensor, n_classes: int, device: torch.device, record: dict[str, Any], stage: str, forced: int | None = None) -> Iterator[None]:
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
    elif x.shape[0] * x.shape[1] * n_classes < _SINGLE_THREAD_WORK:
        count = 1
        record[stage] = {"threads": 1, "rule": "small problem"}
    else:
        objective = _Objective(x, y, n_classes)
        weight, bias = torch.zeros(x.shape[1], n_classes, device=device), torch.zeros(n_classes, device=device)
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


Score = Callable[[Tensor, Tensor], tuple[float, Tensor]]  # (weight, bias) -> (held-out top-1 %, held-out predictions)


def _fit_one(objective: _Objective, c: float, config: LogRegConfig, start: tuple[Tensor, Tensor] | None, dim: int, n_classes: int, device) -> dict[str, Any]:
    """One fit at ``c`` from ``start`` (weights, bias) or from zeros (``None``)."""
    t0 = time.perf_counter()
    weight = torch.zeros(dim, n_classes, device=device) if start is None else start[0].clone()
    bias = torch.zeros(n_classes, device=device) if start is None else start[1].clone()
    n_iter, converged, loss = _minimize(objective, weight, bias, 1.0 / (c * objective.x.shape[0]), config)
    return {"C": float(c), "n_iter": n_iter, "converged": converged, "objective": loss, "weight": weight, "bias": bias,
            "start": "zeros" if start is None else "warm", "seconds": time.perf_counter() - t0}


def _scored(entry: dict[str, Any], score: Score | None) -> dict[str, Any]:
    if score is not None:
        entry["score"], entry["predictions"] = score(entry["weight"], entry["bias"])
    else:
        entry["score"], entry["predictions"] = None, None
    return entry


def _fit_path(
    x: Tensor, y: Tensor, n_classes: int, cs: Sequence[float], config: LogRegConfig, score: Score | None,
    start: dict[str, Any] | None = None, n_holdout: int = 0,
) -> list[dict[str, Any]]:
    """Fit every C in ``cs`` in order, warm-starting each from the last (the first from ``start``, an
    entry of an earlier path, or from zeros); ``score(weight, bias)`` rates a fit. A frozen warm start
    (0 iterations, or no held-out prediction changed) is refitted from zeros. With ``path_patience``, the
    path stops after that many consecutive drops beyond :func:`holdout_noise` of the best score."""
    dim = x.shape[1]
    objective = _Objective(x, y, n_classes)
    path: list[dict[str, Any]] = []
    previous = start
    best, drops = -1.0, 0
    for c in cs:
        entry = _scored(_fit_one(objective, c, config, None if previous is None else (previous["weight"], previous["bias"]), dim, n_classes, x.device), score)
        if entry["start"] == "warm" and score is not None:
            frozen = entry["n_iter"] == 0 or (previous.get("predictions") is not None and torch.equal(entry["predictions"], previous["predictions"]))
            if frozen:
                cold = _scored(_fit_one(objective, c, config, None, dim, n_classes, x.device), score)
                cold.update(cold_checked="frozen", warm_score=entry["score"], warm_iter=entry["n_iter"], seconds=cold["seconds"] + entry["seconds"])
                entry = cold
        path.append(entry)
        previous = entry
        if score is not None and config.path_patience is not None:
            best = max(best, entry["score"])
            drops = drops + 1 if entry["score"] < best - holdout_noise(best, n_holdout) else 0
            if drops >= config.path_patience:
                break
    return path


def _extend_path(path: list[dict[str, Any]], cs: list[float], config: LogRegConfig, fit_one) -> list[float]:
    """Grow ``path`` (in place, kept sorted by C) beyond an edge that holds the held-out peak outright
    (strictly above its neighbour); returns the Cs added. ``fit_one(c, start)`` fits one C from
    ``start`` (an entry) or from zeros (``None``)."""
    added: list[float] = []
    if not config.path_extend or len(cs) < 2:
        return added
    while len(added) < config.max_path_extensions:
        scores = [entry["score"] for entry in path]
        best = int(np.argmax(scores))
        if best == 0 and scores[0] > scores[1]:  # stronger regularisation: cheap, fitted from zeros as the path's first value is
            c = path[0]["C"] * path[0]["C"] / path[1]["C"]
            path.insert(0, entry := fit_one(c, None))
        elif best == len(path) - 1 and path[-1]["C"] >= cs[-1] and scores[-1] > scores[-2]:  # weaker, warm-started from the edge
            c = path[-1]["C"] * path[-1]["C"] / path[-2]["C"]
            path.append(entry := fit_one(c, path[-1]))
        else:
            break
        entry["extended"] = True
        added.append(c)
        if entry["score"] <= scores[best]:  # no better beyond the edge: the peak is (or ties with) the old edge
            break
    return added


def select_c(path: Sequence[dict[str, Any]]) -> int:
    """Index of the chosen entry: the first maximum of held-out top-1 among the given grid's values (the
    strongest regularisation among exact ties, as scikit-learn's sweep); an extended value (beyond the
    grid) only when it beats every grid value outright."""
    scores = [entry["score"] for entry in path]
    grid = [i for i, entry in enumerate(path) if not entry.get("extended")]
    best = max(grid, key=lambda i: (scores[i], -i))
    beyond = [i for i, entry in enumerate(path) if entry.get("extended") and scores[i] > scores[best]]
    return max(beyond, key=lambda i: (scores[i], -i)) if beyond else best


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

    def holdout_top1(weight: Tensor, bias: Tensor) -> tuple[float, Tensor]:
        predictions = torch.cat([torch.addmm(bias, x_hold[start : start + _CHUNK_ROWS], weight).argmax(1) for start in range(0, x_hold.shape[0], _CHUNK_ROWS)])
        return int((predictions == y_hold).sum()) / x_hold.shape[0] * 100.0, predictions

    n_hold = int(hold_rows.numel())
    threads: dict[str, Any] = {}
    with _solver_threads(x_fit, y_fit, n_classes, device, threads, "path", config.threads):
        path = _fit_path(x_fit, y_fit, n_classes, cs, config, holdout_top1, n_holdout=n_hold)
        fit_one = lambda c, start: _fit_path(x_fit, y_fit, n_classes, [c], config, holdout_top1, start=start, n_holdout=n_hold)[0]
        extended = _extend_path(path, cs, config, fit_one)
    scores = [entry["score"] for entry in path]
    best = select_c(path)
    chosen = path[best]
    not_fitted = [c for c in cs if c > max(entry["C"] for entry in path if not entry.get("extended"))]
    path_seconds = time.perf_counter() - started
    del x_fit, x_hold

    weight, bias = chosen["weight"], chosen["bias"]
    refit_info: dict[str, Any] = {}
    if config.refit:
        t0 = time.perf_counter()
        all_rows = torch.arange(tx.shape[0])
        mean, std = moments(all_rows)
        x_all = _standardized(tx, all_rows, mean, std, device)
        y_all = ty.to(device)
        with _solver_threads(x_all, y_all, n_classes, device, threads, "refit", config.threads):
            refit = _fit_one(_Objective(x_all, y_all, n_classes), chosen["C"], config, None, dim, n_classes, device)  # from zeros, as scikit-learn
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
    cold_checked = {f"C={entry['C']:.3g}": {"why": entry["cold_checked"], "warm_top1": entry["warm_score"], "warm_iter": entry["warm_iter"]}
                    for entry in path if entry.get("cold_checked")}
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
            "not_fitted": [f"C={c:.3g}" for c in not_fitted],  # after path_patience drops beyond the held-out noise
            "cold_checked": cold_checked,  # frozen warm starts, refitted from zeros
            "holdout_noise": holdout_noise(chosen["score"], n_hold),
            "threads": threads,
            "n_fit": int(fit_rows.numel()),
            "n_holdout": int(hold_rows.numel()),
            "path_seconds": path_seconds,
            "total_seconds": time.perf_counter() - started,
            "config": asdict(config),
            **refit_info,
        },
    )
