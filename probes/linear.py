"""Linear-probe classification on frozen (cached) features.

Two methods, both selecting their hyperparameters on a stratified held-out part of *train* (never on
the split they report) and reporting top-1 / top-5 accuracy, in percent, on the eval split:

- :func:`linear_probe`: a grid of softmax-regression heads (learning rate x L2 weight decay) trained
  together in one pass over the data (the DINOv2 linear-eval idea applied to cached features): the
  heads are one ``(D, H, C)`` weight tensor, each minibatch costs one ``(B, D) @ (D, H*C)`` matmul
  forward and one backward, and the per-head update is a single vectorised step.
- :func:`sklearn_logreg_probe`: the study's reference (OpenAI-CLIP recipe): scikit-learn
  ``LogisticRegression`` (L2, multinomial, lbfgs, ``max_iter=1000``) fitted once per ``C``.

The heads minimise ``mean cross-entropy + wd / 2 * ||W||^2`` (bias not penalised), which is
scikit-learn's objective with ``C = 1 / (wd * n_train)``; the selected head reports that ``C``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evidence.stats import bootstrap_ci
from probes.standardize import feature_moments
from probes.threads import SINGLE_THREAD_WORK, at_most_threads

ArrayLike = Tensor | np.ndarray

# Rows per chunk when a whole split is scored or reduced at once (bounds memory, not results).
_EVAL_CHUNK = 8192


@dataclass
class ClassificationResult:
    """Accuracy of one classifier on the eval split.

    ``top1``/``top5`` are percentages (0..100); ``top5`` is ``None`` with fewer than 5 classes.
    ``correct`` is the per-item top-1 correctness in eval order (for paired bootstraps between
    encoders); ``top1_ci`` is its 95% percentile-bootstrap interval in percent (``top5_correct`` and
    ``top5_ci`` the same for top-5, None with fewer than 5 classes). ``selected`` holds
    the hyperparameters chosen on the held-out part of train, ``selection_score`` that part's top-1
    (percent) for them, ``n_tried`` how many hyperparameter settings were compared.
    """

    method: str
    top1: float
    top5: float | None
    n_eval: int
    correct: np.ndarray
    top1_ci: tuple[float, float]
    selected: dict[str, Any] = field(default_factory=dict)
    selection_score: float | None = None
    n_tried: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    top5_correct: np.ndarray | None = None
    top5_ci: tuple[float, float] | None = None


@dataclass
class LinearProbeConfig:
    """Hyperparameter grid and training schedule of :func:`linear_probe`.

    Every (lr, weight decay) pair is one head, so ``len(lrs) * len(weight_decays)`` heads are trained
    together. ``optimizer`` is ``"adam"`` (Adam on the L2-regularised loss) or ``"sgd"`` (Nesterov
    momentum); the learning rate follows a cosine schedule from its value to 0 after a linear
    warm-up of ``warmup_epochs``. Small train sets get more epochs, so that every head takes at
    least ``min_steps`` optimizer steps. ``standardize`` rescales each feature dimension with the
    mean/std of the rows being fitted (never eval rows). ``refit`` retrains the selected head on all
    of train before evaluating. ``grid_extend``: while the chosen head sits on an edge of the grid (the
    smallest or largest learning rate, the largest or smallest positive weight decay), add one grid
    step beyond that edge (the edge's own ratio to its neighbour), train only the new heads and select
    again, at most ``max_grid_extensions`` times; weight decay 0 is not an edge (nothing lies below).
    """

    lrs: tuple[float, ...] = tuple(float(v) for v in np.logspace(-3.5, 0, 8))
    weight_decays: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
    epochs: int = 10
    batch_size: int = 512
    min_steps: int = 300
    warmup_epochs: float = 0.5
    optimizer: str = "adam"
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    holdout_fraction: float = 0.1
    seed: int = 0
    standardize: bool = True
    refit: bool = True
    grid_extend: bool = True
    max_grid_extensions: int = 3

    def __post_init__(self) -> None:
        if not self.lrs or not self.weight_decays:
            raise ValueError("LinearProbeConfig: lrs and weight_decays must each hold at least one value")
        if any(lr <= 0 for lr in self.lrs) or any(wd < 0 for wd in self.weight_decays):
            raise ValueError("LinearProbeConfig: learning rates must be > 0 and weight decays >= 0")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"LinearProbeConfig: optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.min_steps < 0:
            raise ValueError("LinearProbeConfig: epochs and batch_size must be >= 1, min_steps >= 0")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"LinearProbeConfig: holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.max_grid_extensions < 0:
            raise ValueError(f"LinearProbeConfig: max_grid_extensions must be >= 0, got {self.max_grid_extensions}")

    @property
    def n_heads(self) -> int:
        return len(self.lrs) * len(self.weight_decays)


# --------------------------------------------------------------------------------------------------
# Input checks and shared helpers (also used by probes.knn)


def _as_features(x: ArrayLike, name: str) -> Tensor:
    tensor = torch.as_tensor(x)
    if tensor.ndim != 2:
        raise ValueError(f"{name} features: expected a 2-D (items, dims) array, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} features: expected a floating-point array, got {tensor.dtype}")
    bad_rows = 0
    for start in range(0, tensor.shape[0], _EVAL_CHUNK):
        chunk = tensor[start : start + _EVAL_CHUNK]
        bad_rows += int((~torch.isfinite(chunk)).any(dim=1).sum())
    if bad_rows:
        raise ValueError(
            f"{name} features contain NaN/Inf ({bad_rows} rows of {tensor.shape[0]}); "
            "recompute the features (e.g. without fp16 overflow) before probing"
        )
    return tensor


def _as_labels(y: ArrayLike, name: str) -> Tensor:
    tensor = torch.as_tensor(y)
    if tensor.ndim != 1:
        raise ValueError(f"{name} labels: expected a 1-D vector, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} labels: expected integer class ids, got {tensor.dtype}")
    return tensor.long()


def validate_classification_inputs(
    train_x: ArrayLike, train_y: ArrayLike, eval_x: ArrayLike, eval_y: ArrayLike
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Check a (train, eval) feature/label set and map labels to contiguous class indices.

    Returns ``(train_x, train_idx, eval_x, eval_idx, classes)`` where ``classes[i]`` is the original
    label of class index ``i``. Raises ``ValueError`` for NaN/Inf features, shape mismatches, fewer
    than 2 train classes, or eval labels that never occur in train.
    """
    tx, ex = _as_features(train_x, "train"), _as_features(eval_x, "eval")
    ty, ey = _as_labels(train_y, "train"), _as_labels(eval_y, "eval")
    if tx.shape[0] != ty.shape[0]:
        raise ValueError(f"train: {tx.shape[0]} feature rows but {ty.shape[0]} labels")
    if ex.shape[0] != ey.shape[0]:
        raise ValueError(f"eval: {ex.shape[0]} feature rows but {ey.shape[0]} labels")
    if ex.shape[0] == 0:
        raise ValueError("eval split is empty")
    if tx.shape[1] != ex.shape[1]:
        raise ValueError(f"train features have {tx.shape[1]} dims but eval features have {ex.shape[1]}")
    classes = torch.unique(ty)
    if classes.numel() < 2:
        raise ValueError(f"train labels hold {classes.numel()} class(es); a classifier needs at least 2")
    missing = torch.unique(ey[~torch.isin(ey, classes)])
    if missing.numel():
        shown = missing[:10].tolist()
        raise ValueError(
            f"{missing.numel()} eval class(es) absent from train (e.g. {shown}); "
            "the train split must contain every class that is evaluated"
        )
    return tx, torch.searchsorted(classes, ty), ex, torch.searchsorted(classes, ey), classes


def topk_correct(scores: Tensor, targets: Tensor, k: int) -> Tensor:
    """Boolean per row: is ``targets`` among the ``k`` highest ``scores`` of that row."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == targets[:, None]).any(dim=1)


def make_result(
    method: str,
    top1_correct: Tensor,
    top5_correct: Tensor | None,
    *,
    seed: int = 0,
    selected: dict[str, Any] | None = None,
    selection_score: float | None = None,
    n_tried: int = 1,
    extra: dict[str, Any] | None = None,
) -> ClassificationResult:
    """Build a :class:`ClassificationResult` from per-item correctness (percent + bootstrap CI)."""
    correct = top1_correct.cpu().numpy().astype(bool)
    top5 = None if top5_correct is None else float(top5_correct.float().mean()) * 100.0
    correct5 = None if top5_correct is None else top5_correct.cpu().numpy().astype(bool)
    return ClassificationResult(
        method=method,
        top1=float(correct.mean()) * 100.0,
        top5=top5,
        n_eval=int(correct.size),
        correct=correct,
        top1_ci=bootstrap_ci(correct, seed=seed, scale=100.0),
        selected=dict(selected or {}),
        selection_score=selection_score,
        n_tried=n_tried,
        extra=dict(extra or {}),
        top5_correct=correct5,
        top5_ci=None if correct5 is None else bootstrap_ci(correct5, seed=seed, scale=100.0),
    )


def stratified_holdout(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split row indices into (fit, holdout) with about ``fraction`` of every class held out.

    Every class keeps at least one row in the fit part; a class with a single row is never held out.
    Deterministic for a given ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    fit, hold = [], []
    for cls in torch.unique(labels):
        rows = torch.nonzero(labels == cls).flatten()
        rows = rows[torch.randperm(rows.numel(), generator=generator)]
        n_hold = min(round(fraction * rows.numel()), rows.numel() - 1)
        hold.append(rows[:n_hold])
        fit.append(rows[n_hold:])
    fit_idx, hold_idx = torch.cat(fit).sort().values, torch.cat(hold).sort().values
    if hold_idx.numel() == 0:
        raise ValueError(
            f"holdout_fraction={fraction} of {labels.numel()} train rows holds out nothing; "
            "use more train rows or a larger holdout_fraction"
        )
    return fit_idx, hold_idx


# --------------------------------------------------------------------------------------------------
# The one-pass grid of heads


@dataclass
class _Heads:
    weight: Tensor  # (D, H, C)
    bias: Tensor  # (H, C)
    mean: Tensor  # (D,) feature standardisation of the rows that were fitted
    std: Tensor  # (D,)

    def logits(self, x: Tensor) -> Tensor:
        """(B, H, C) logits of every head for raw features ``x`` (B, D)."""
        d, h, c = self.weight.shape
        x = (x - self.mean) / self.std
        return (x @ self.weight.view(d, h * c) + self.bias.view(h * c)).view(-1, h, c)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _train_heads(
    x: Tensor,
    y: Tensor,
    rows: Tensor,
    n_classes: int,
    lrs: Tensor,
    wds: Tensor,
    config: LinearProbeConfig,
    device: torch.device,
) -> tuple[_Heads, int]:
    """Train ``H = len(lrs)`` softmax-regression heads at once on ``x[rows]`` (one pass per epoch).

    Returns the heads and the number of epochs run.
    """
    dim, n_heads = x.shape[1], lrs.numel()
    if config.standardize:
        mean, std = feature_moments(x, rows, device)
    else:
        mean = torch.zeros(dim, device=device)
        std = torch.ones(dim, device=device)
    weight = torch.zeros(dim, n_heads, n_classes, device=device)
    bias = torch.zeros(n_heads, n_classes, device=device)
    lr_w = lrs.to(device).view(1, n_heads, 1)
    lr_b = lrs.to(device).view(n_heads, 1)
    wd = wds.to(device).view(1, n_heads, 1)
    state_w = [torch.zeros_like(weight) for _ in range(2 if config.optimizer == "adam" else 1)]
    state_b = [torch.zeros_like(bias) for _ in range(2 if config.optimizer == "adam" else 1)]

    n = rows.numel()
    batch = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
    total = epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    y_dev = y.to(device)
    # Small matmuls gain little from threads, and on shared cores the OpenMP threads' waits cost
    # milliseconds per call (measured on 2 busy cores: 40 ms for a (200, 5) @ (5, 3) product; a
    # one-head refit at 50k x 768 x 100 took 43-149 s on 2 threads and 6-7 s on one).
    small = device.type == "cpu" and batch * dim * n_heads * n_classes < SINGLE_THREAD_WORK
    step = 0
    with at_most_threads(1 if small else torch.get_num_threads()):
        for _ in range(epochs):
            order = rows[torch.randperm(n, generator=generator)]
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                xb = (x[idx].to(device=device, dtype=torch.float32) - mean) / std
                grad_w, grad_b = _head_gradients(xb, y_dev[idx.to(device)], weight, bias, wd)
                factor = _lr_factor(step, total, warmup)
                step += 1
                _update(weight, grad_w, state_w, lr_w * factor, step, config)
                _update(bias, grad_b, state_b, lr_b * factor, step, config)
    return _Heads(weight, bias, mean, std), epochs


def _head_gradients(xb: Tensor, yb: Tensor, weight: Tensor, bias: Tensor, wd: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of every head's ``mean CE + wd / 2 * ||W||^2`` on one minibatch: standardised ``xb``
    (B, D), labels ``yb`` (B,), ``weight`` (D, H, C), ``bias`` (H, C), ``wd`` (1, H, 1)."""
    dim, n_heads, n_classes = weight.shape
    count = xb.shape[0]
    logits = (xb @ weight.view(dim, -1) + bias.view(-1)).view(-1, n_heads, n_classes)
    # d(mean CE)/d(logits) = softmax - onehot, per head; heads share nothing but the input.
    grad = torch.softmax(logits, dim=2)
    grad[torch.arange(count, device=xb.device), :, yb] -= 1.0
    grad /= count
    grad_w = (xb.T @ grad.view(count, -1)).view_as(weight)
    grad_w.addcmul_(weight, wd)
    return grad_w, grad.sum(0)


def _update(param: Tensor, grad: Tensor, state: list[Tensor], lr: Tensor, step: int, config: LinearProbeConfig) -> None:
    """One in-place optimizer step with a per-head learning rate ``lr`` broadcast over ``param``.

    Consumes ``grad`` (it is overwritten) so that the step allocates one temporary at most: with
    tens of heads the parameter tensor is as large as a minibatch, and these elementwise passes
    cost as much as the matmuls.
    """
    if config.optimizer == "sgd":
        (buf,) = state
        buf.mul_(config.momentum).add_(grad)
        grad.add_(buf, alpha=config.momentum).mul_(lr)  # Nesterov: grad + momentum * buf
        param.sub_(grad)
        return
    m, v = state
    beta1, beta2 = config.betas
    m.lerp_(grad, 1.0 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    denom = torch.sqrt(v, out=grad).div_(math.sqrt(1.0 - beta2**step)).add_(config.eps)
    param.sub_(torch.div(m, denom, out=denom).mul_(lr / (1.0 - beta1**step)))


def _score_heads(heads: _Heads, x: Tensor, y: Tensor, rows: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """Top-1 accuracy (fraction) and mean cross-entropy of every head on ``x[rows]``: two (H,) tensors."""
    n_heads = heads.weight.shape[1]
    correct = torch.zeros(n_heads, dtype=torch.float64, device=device)
    loss = torch.zeros(n_heads, dtype=torch.float64, device=device)
    for start in range(0, rows.numel(), _EVAL_CHUNK):
        idx = rows[start : start + _EVAL_CHUNK]
        logits = heads.logits(x[idx].to(device=device, dtype=torch.float32))
        target = y[idx].to(device)
        correct += (logits.argmax(dim=2) == target[:, None]).sum(0)
        picked = logits.gather(2, target.view(-1, 1, 1).expand(-1, n_heads, 1)).squeeze(2)
        loss += (torch.logsumexp(logits, dim=2) - picked).sum(0).double()
    return (correct / rows.numel()).cpu(), (loss / rows.numel()).cpu()


def grid_edges(lr: float, wd: float, lr_values: Sequence[float], wd_values: Sequence[float]) -> list[str]:
    """Which edges of the (sorted) grid the choice ``(lr, wd)`` sits on: a list of ``lr_low``, ``lr_high``,
    ``wd_low``, ``wd_high`` (empty: interior). An axis with one value has no edge (no step is known);
    weight decay 0 is never an edge (nothing lies below it)."""
    edges = []
    if len(lr_values) > 1:
        edges += ["lr_low"] if lr == lr_values[0] else ["lr_high"] if lr == lr_values[-1] else []
    positive = [v for v in wd_values if v > 0]
    if len(positive) > 1 or (positive and len(wd_values) > 1):
        if wd == wd_values[-1]:
            edges.append("wd_high")
        elif wd == positive[0] and wd_values[0] == positive[0] and len(positive) > 1:
            edges.append("wd_low")
    return edges


def _extend_values(edges: list[str], lr_values: list[float], wd_values: list[float]) -> tuple[list[float], list[float]]:
    """One grid step beyond each edge in ``edges`` (the ratio between the edge and its neighbour)."""
    lrs, wds = list(lr_values), list(wd_values)
    if "lr_low" in edges:
        lrs.insert(0, lrs[0] * lrs[0] / lrs[1])
    if "lr_high" in edges:
        lrs.append(lrs[-1] * lrs[-1] / lrs[-2])
    positive = [v for v in wds if v > 0]
    if "wd_high" in edges:
        wds.append(wds[-1] * (wds[-1] / wds[-2] if wds[-2] > 0 else 10.0))
    if "wd_low" in edges:
        wds.insert(0, positive[0] * positive[0] / positive[1])
    return lrs, wds


@dataclass
class _GridSearch:
    """The heads a grid search trained and how they scored on the held-out part of train."""

    grid: list[tuple[float, float]]  # (lr, weight decay) of every head, in training order
    trained: list[tuple[_Heads, int]]  # (heads of one training pass, index in it) per grid entry
    hold_acc: Tensor  # (len(grid),) held-out top-1, fraction
    best: int
    edges: list[str]  # grid edges the best head sits on
    extensions: list[dict[str, Any]]
    epochs: int  # epochs of the (last) grid pass


def _grid_search(tx: Tensor, ty: Tensor, fit_rows: Tensor, hold_rows: Tensor, n_classes: int, config: LinearProbeConfig, device: torch.device) -> _GridSearch:
    """Train the grid's heads on ``fit_rows`` and rank them on ``hold_rows`` (top-1, then lower loss); while
    the best sits on an edge (and ``config.grid_extend``), train one step beyond it."""
    lr_values = sorted({float(v) for v in config.lrs})
    wd_values = sorted({float(v) for v in config.weight_decays})
    pending = [(float(lr), float(wd)) for wd in config.weight_decays for lr in config.lrs]
    grid: list[tuple[float, float]] = []
    trained: list[tuple[_Heads, int]] = []
    accs, losses, extensions = [], [], []
    while True:
        lrs = torch.tensor([lr for lr, _ in pending], dtype=torch.float32)
        wds = torch.tensor([wd for _, wd in pending], dtype=torch.float32)
        heads, grid_epochs = _train_heads(tx, ty, fit_rows, n_classes, lrs, wds, config, device)
        acc, loss = _score_heads(heads, tx, ty, hold_rows, device)
        grid += pending
        trained += [(heads, i) for i in range(len(pending))]
        accs.append(acc)
        losses.append(loss)
        hold_acc, hold_loss = torch.cat(accs), torch.cat(losses)
        # Rank by held-out top-1, then by held-out loss: lexsort keys go last-is-primary.
        best = int(np.lexsort((hold_loss.numpy(), -hold_acc.numpy()))[0])
        edges = grid_edges(*grid[best], lr_values, wd_values)
        if not edges or not config.grid_extend or len(extensions) >= config.max_grid_extensions:
            break
        lr_values, wd_values = _extend_values(edges, lr_values, wd_values)
        known = set(grid)
        pending = [(lr, wd) for wd in wd_values for lr in lr_values if (lr, wd) not in known]
        if not pending:
            break
        extensions.append({"edges": edges, "new_heads": len(pending)})
    return _GridSearch(grid, trained, hold_acc, best, edges, extensions, grid_epochs)


def _eval_topk(heads: _Heads, head: int, ex: Tensor, ey: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-item top-1 and top-5 correctness of head ``head`` on the eval split."""
    top1, top5 = [], []
    for start in range(0, ex.shape[0], _EVAL_CHUNK):
        logits = heads.logits(ex[start : start + _EVAL_CHUNK].to(device=device, dtype=torch.float32))[:, head]
        target = ey[start : start + _EVAL_CHUNK].to(device)
        top1.append(topk_correct(logits, target, 1).cpu())
        top5.append(topk_correct(logits, target, 5).cpu())
    return torch.cat(top1), torch.cat(top5)


def linear_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    eval_x: ArrayLike,
    eval_y: ArrayLike,
    *,
    config: LinearProbeConfig | None = None,
    device: str | torch.device = "cpu",
) -> ClassificationResult:
    """Linear probe: one-pass grid of softmax-regression heads, best head chosen on held-out train.

    ``train_x``/``eval_x`` are (items, dims) features in any float dtype (rows are cast to float32 a
    minibatch at a time, so fp16 memory-mapped features are not copied whole); labels are integer
    class ids. The heads are trained on the fit part of a stratified split of train, ranked by top-1
    on the held-out part (ties: lower held-out cross-entropy), and the winner is optionally refitted
    on all of train. Returns top-1/top-5 accuracy (percent) on eval.
    """
    config = config or LinearProbeConfig()
    device = torch.device(device)
    started = time.perf_counter()
    tx, ty, ex, ey, classes = validate_classification_inputs(train_x, train_y, eval_x, eval_y)
    n_classes = classes.numel()
    fit_rows, hold_rows = stratified_holdout(ty, config.holdout_fraction, config.seed)
    search = _grid_search(tx, ty, fit_rows, hold_rows, n_classes, config, device)
    best_lr, best_wd = search.grid[search.best]
    grid_seconds = time.perf_counter() - started

    if config.refit:
        heads, epochs = _train_heads(tx, ty, torch.arange(tx.shape[0]), n_classes, torch.tensor([best_lr]), torch.tensor([best_wd]), config, device)
        head, n_fitted = 0, tx.shape[0]
    else:
        (heads, head), n_fitted, epochs = search.trained[search.best], fit_rows.numel(), search.epochs

    top1, top5 = _eval_topk(heads, head, ex, ey, device)
    selected: dict[str, Any] = {"lr": best_lr, "weight_decay": best_wd, "epochs": epochs}
    selected["equivalent_C"] = 1.0 / (best_wd * n_fitted) if best_wd > 0 else float("inf")
    return make_result(
        "linear_grid",
        top1,
        top5 if n_classes >= 5 else None,
        seed=config.seed,
        selected=selected,
        selection_score=float(search.hold_acc[search.best]) * 100.0,
        n_tried=len(search.grid),
        extra={
            "holdout_top1": {f"lr={lr:.3g},wd={wd:.3g}": float(a) * 100.0 for (lr, wd), a in zip(search.grid, search.hold_acc)},
            "n_fit": int(fit_rows.numel()),
            "n_holdout": int(hold_rows.numel()),
            "refit": config.refit,
            "grid_epochs": search.epochs,
            "at_edge": search.edges,
            "grid_extensions": search.extensions,
            "grid_seconds": grid_seconds,
            "total_seconds": time.perf_counter() - started,
            "config": asdict(config),
        },
    )


# --------------------------------------------------------------------------------------------------
# The reference: scikit-learn LogisticRegression, one fit per C

DEFAULT_CS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-4, 2, 8))


def _standardized_numpy(x: Tensor, mean: Tensor | None, std: Tensor | None) -> np.ndarray:
    array = x.to(torch.float32)
    if mean is not None:
        array = (array - mean) / std
    return array.numpy()


def _sklearn_fit(tx: Tensor, ty: Tensor, rows: Tensor, c: float, max_iter: int, standardize: bool) -> tuple[Any, Tensor | None, Tensor | None, bool]:
    """scikit-learn ``LogisticRegression(C=c)`` fitted on ``rows`` (standardised with their mean/std):
    the model, the mean and std used (None without ``standardize``) and whether lbfgs converged."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    mean, std = feature_moments(tx, rows, torch.device("cpu")) if standardize else (None, None)
    model = LogisticRegression(C=c, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(_standardized_numpy(tx[rows], mean, std), ty[rows].numpy())
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model, mean, std, converged


def _sklearn_sweep(tx: Tensor, ty: Tensor, fit_rows: Tensor, hold_rows: Tensor, Cs: Sequence[float], max_iter: int, standardize: bool,
                   progress: bool) -> tuple[list[float], list[bool], list[float]]:
    """One fit per C on ``fit_rows``: held-out top-1 (percent), convergence and seconds of each."""
    from tqdm import tqdm

    hold_scores, converged_all, fit_seconds = [], [], []
    for c in tqdm(Cs, desc="sklearn LogisticRegression (fits per C, then 1 refit)", unit="fit", disable=not progress, dynamic_ncols=True):
        t0 = time.perf_counter()
        model, mean, std, converged = _sklearn_fit(tx, ty, fit_rows, float(c), max_iter, standardize)
        pred = model.predict(_standardized_numpy(tx[hold_rows], mean, std))
        hold_scores.append(float(np.mean(pred == ty[hold_rows].numpy())) * 100.0)
        converged_all.append(converged)
        fit_seconds.append(time.perf_counter() - t0)
    return hold_scores, converged_all, fit_seconds


def sklearn_logreg_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    eval_x: ArrayLike,
    eval_y: ArrayLike,
    *,
    Cs: Sequence[float] = DEFAULT_CS,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    max_iter: int = 1000,
    standardize: bool = True,
    progress: bool = False,
) -> ClassificationResult:
    """Reference linear probe: scikit-learn ``LogisticRegression`` (L2, multinomial softmax, lbfgs).

    One fit per ``C`` (inverse regularisation strength) on the fit part of a stratified split of
    train, ``C`` chosen by top-1 on the held-out part, then one refit on all of train with that ``C``.
    ``standardize`` uses the per-dimension mean/std of the rows being fitted. ``progress`` shows a
    tqdm bar over the fits (with its time estimate). Returns top-1/top-5 accuracy (percent) on eval.
    """
    if not Cs or any(c <= 0 for c in Cs):
        raise ValueError(f"sklearn_logreg_probe: Cs must be a non-empty sequence of positive values, got {Cs}")
    started = time.perf_counter()
    tx, ty, ex, ey, classes = validate_classification_inputs(train_x, train_y, eval_x, eval_y)
    fit_rows, hold_rows = stratified_holdout(ty, holdout_fraction, seed)
    hold_scores, converged_all, fit_seconds = _sklearn_sweep(tx, ty, fit_rows, hold_rows, Cs, max_iter, standardize, progress)
    best = int(np.argmax(hold_scores))
    best_c = float(Cs[best])

    t0 = time.perf_counter()
    model, mean, std, refit_converged = _sklearn_fit(tx, ty, torch.arange(tx.shape[0]), best_c, max_iter, standardize)
    refit_seconds = time.perf_counter() - t0
    scores = torch.from_numpy(model.decision_function(_standardized_numpy(ex, mean, std)))
    if scores.ndim == 1:  # binary problems return one margin per row; make it two class scores
        scores = torch.stack([-scores, scores], dim=1)
    # model.classes_ are the sorted class indices 0..C-1 because every class is in train.
    return make_result(
        "sklearn_logreg",
        topk_correct(scores, ey, 1),
        topk_correct(scores, ey, 5) if classes.numel() >= 5 else None,
        seed=seed,
        selected={"C": best_c, "max_iter": max_iter},
        selection_score=hold_scores[best],
        n_tried=len(Cs),
        extra={
            "holdout_top1": {f"C={c:.3g}": s for c, s in zip(Cs, hold_scores)},
            "converged": dict(zip((f"C={c:.3g}" for c in Cs), converged_all)),
            "refit_converged": refit_converged,
            "fit_seconds": fit_seconds,
            "refit_seconds": refit_seconds,
            "n_fit": int(fit_rows.numel()),
            "n_holdout": int(hold_rows.numel()),
            "total_seconds": time.perf_counter() - started,
        },
    )


def fit_linear_head(
    train_x: ArrayLike, train_y: ArrayLike, *, lr: float, weight_decay: float, config: LinearProbeConfig | None = None, device: str | torch.device = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """One softmax-regression head with the given hyperparameters, trained on all of train as
    :func:`linear_probe` refits its selected head. Returns ``(weight (D, C), bias (C,), classes (C,))``
    acting on raw features (the standardisation folded in): ``logits = x @ weight + bias``, column c is
    dataset class id ``classes[c]``."""
    config = config or LinearProbeConfig()
    tx, ty, _, _, classes = validate_classification_inputs(train_x, train_y, train_x[:1], train_y[:1])
    heads, _ = _train_heads(tx, ty, torch.arange(tx.shape[0]), classes.numel(), torch.tensor([float(lr)]), torch.tensor([float(weight_decay)]), config, torch.device(device))
    weight = heads.weight[:, 0] / heads.std[:, None]
    bias = heads.bias[0] - (heads.mean / heads.std) @ heads.weight[:, 0]
    return weight.cpu(), bias.cpu(), classes.cpu()
