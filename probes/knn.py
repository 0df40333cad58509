"""Non-parametric classifiers on frozen features: weighted kNN and class-mean prototypes (cosine).

Both L2-normalise every feature row, so similarity is cosine similarity in [-1, 1]. Neither has a
hyperparameter chosen on data, so neither needs a held-out split: ``ks`` and ``temperature`` are
fixed in advance (DINO's defaults: k in {10, 20}, T = 0.07). Accuracies are percentages.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from probes.linear import (
    ArrayLike,
    ClassificationResult,
    make_result,
    topk_correct,
    validate_classification_inputs,
)

# Similarity entries per (eval chunk x train chunk) block: 64 MiB of float32 on CPU, 1 GiB on a GPU.
_SIM_BUDGET = 1 << 24
_SIM_BUDGET_GPU = 1 << 28
# Eval rows per chunk when batch_size is not given.
_QUERY_CHUNK = 1024


def _normalized(x: Tensor, device: torch.device, chunk: int = 8192) -> Tensor:
    """float32 copy of ``x`` with unit-L2-norm rows (all-zero rows stay zero)."""
    return torch.cat(
        [
            F.normalize(x[s : s + chunk].to(device=device, dtype=torch.float32), dim=1)
            for s in range(0, x.shape[0], chunk)
        ]
    )


def _topk_similar(queries: Tensor, train: Tensor, k: int, train_chunk: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest ``queries @ train.T`` entries per row (descending) and their train indices,
    computed ``train_chunk`` train rows at a time with a running top-k merge."""
    best_sims = best_idx = None
    for start in range(0, train.shape[0], train_chunk):
        sims, idx = (queries @ train[start : start + train_chunk].T).topk(min(k, train.shape[0] - start), dim=1)
        idx += start
        if best_sims is not None:
            sims, picked = torch.cat([best_sims, sims], dim=1).topk(k, dim=1)
            idx = torch.cat([best_idx, idx], dim=1).gather(1, picked)
        best_sims, best_idx = sims, idx
    return best_sims, best_idx


def _check_settings(ks: Sequence[int], temperature: float, batch_size: int | None) -> None:
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"knn_probe: ks must be positive integers, got {ks}")
    if temperature <= 0:
        raise ValueError(f"knn_probe: temperature must be > 0, got {temperature}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"knn_probe: batch_size must be >= 1, got {batch_size}")


def _votes(queries: Tensor, train: Tensor, train_labels: Tensor, ks: list[int], temperature: float, n_classes: int, train_chunk: int) -> dict[int, Tensor]:
    """Per ``k`` (sorted ``ks``): the class votes (Q, C) of the normalised ``queries`` from their ``k`` nearest train rows."""
    sims, idx = _topk_similar(queries, train, ks[-1], train_chunk)
    # Shifting by the row maximum leaves the vote ranking unchanged and cannot overflow for small T.
    weights = torch.exp((sims - sims[:, :1]) / temperature)
    labels = train_labels[idx]
    votes = {}
    for k in ks:
        votes[k] = torch.zeros(queries.shape[0], n_classes, device=queries.device)
        votes[k].scatter_add_(1, labels[:, :k], weights[:, :k])
    return votes


def knn_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    eval_x: ArrayLike,
    eval_y: ArrayLike,
    *,
    ks: Sequence[int] = (10, 20),
    temperature: float = 0.07,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[int, ClassificationResult]:
    """Weighted k-nearest-neighbour classifier (DINO style), one result per ``k``.

    Each eval row votes for the classes of its ``k`` most cosine-similar train rows, neighbour ``j``
    with weight ``exp(sim_j / temperature)``; the class with the most weight is the prediction, and
    the 5 heaviest classes give top-5. Everything runs on ``device``. Eval rows are processed
    ``batch_size`` at a time (default 1024) against train chunks sized so that one similarity block
    holds at most 16M entries (256M on a GPU), merging the running top-k, so memory is bounded by the
    normalised train features (float32, e.g. 5.9 GB at 1.28M x 1152) plus one block whatever the
    number of train rows. ``seed`` only seeds the bootstrap of the confidence interval.
    """
    _check_settings(ks, temperature, batch_size)
    device = torch.device(device)
    tx, ty, ex, ey, classes = validate_classification_inputs(train_x, train_y, eval_x, eval_y)
    n_train, n_classes = tx.shape[0], classes.numel()
    ks = sorted({int(k) for k in ks})
    if ks[-1] > n_train:
        raise ValueError(f"knn_probe: k={ks[-1]} exceeds the {n_train} train rows")

    train = _normalized(tx, device)
    train_labels = ty.to(device)
    chunk = batch_size or min(_QUERY_CHUNK, ex.shape[0])
    budget = _SIM_BUDGET_GPU if device.type == "cuda" else _SIM_BUDGET
    train_chunk = max(ks[-1], budget // chunk)
    top1: dict[int, list[Tensor]] = {k: [] for k in ks}
    top5: dict[int, list[Tensor]] = {k: [] for k in ks}
    for start in range(0, ex.shape[0], chunk):
        queries = _normalized(ex[start : start + chunk], device)
        target = ey[start : start + chunk].to(device)
        for k, votes in _votes(queries, train, train_labels, ks, temperature, n_classes, train_chunk).items():
            top1[k].append(topk_correct(votes, target, 1).cpu())
            top5[k].append(topk_correct(votes, target, 5).cpu())
    return {
        k: make_result(
            f"knn_k{k}",
            torch.cat(top1[k]),
            torch.cat(top5[k]) if n_classes >= 5 else None,
            seed=seed,
            selected={"k": k, "temperature": temperature},
            extra={"n_train": n_train},
        )
        for k in ks
    }


def prototype_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    eval_x: ArrayLike,
    eval_y: ArrayLike,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> ClassificationResult:
    """Class-mean (prototype) classifier: nearest class centroid by cosine similarity.

    A class's prototype is the mean of its L2-normalised train features, itself re-normalised; each
    eval row is assigned to the prototype it is most cosine-similar to. ``seed`` only seeds the
    bootstrap of the confidence interval.
    """
    device = torch.device(device)
    tx, ty, ex, ey, classes = validate_classification_inputs(train_x, train_y, eval_x, eval_y)
    n_classes = classes.numel()
    sums = torch.zeros(n_classes, tx.shape[1], device=device)
    for start in range(0, tx.shape[0], 8192):
        sums.index_add_(0, ty[start : start + 8192].to(device), _normalized(tx[start : start + 8192], device))
    prototypes = F.normalize(sums, dim=1)
    top1, top5 = [], []
    for start in range(0, ex.shape[0], 8192):
        scores = _normalized(ex[start : start + 8192], device) @ prototypes.T
        target = ey[start : start + 8192].to(device)
        top1.append(topk_correct(scores, target, 1).cpu())
        top5.append(topk_correct(scores, target, 5).cpu())
    return make_result(
        "prototype",
        torch.cat(top1),
        torch.cat(top5) if n_classes >= 5 else None,
        seed=seed,
        extra={"n_train": int(tx.shape[0])},
    )
