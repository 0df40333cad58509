"""Segmentation probes on cached patch tokens (docs/protocol.md section 2), in pure torch.

* :func:`patch_targets`: multi-label patch targets from masks at the encoder's own grid (a patch
  carries every class present among its pixels; ignore pixels count for nothing).
* :func:`patch_probe`: the study's patch-level probe, a 2-layer MLP per patch token trained with
  BCE, the best epoch chosen on a held-out part of train; macro patch recall / precision / F1 in %.
* :func:`fast_linear_head`: a BNHead (BatchNorm + 1x1 conv) on the cached patch map, logits upsampled
  to the mask, cross-entropy; mIoU / mAcc / aAcc in % as mmseg's ``IoUMetric`` computes them.
* :func:`seg_areas` / :func:`iou_metrics` / :func:`bootstrap_miou`: the metric, per image and over a set.
* :class:`MMSegConfig`: the settings of the third protocol, mmseg's linear head
  (:mod:`probes.mmseg_linear`), kept here so that reading its defaults does not import mmseg.

Tokens are ``(n, h*w, D)`` arrays (memory-mapped fp16 from the feature store); batches are read from
them, so an epoch reads features, never images.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probes.threads import SINGLE_THREAD_WORK, at_most_threads

IGNORE_INDEX = 255
TokenSource = Callable[[np.ndarray], torch.Tensor]
"""``indices (sorted) -> (B, h*w, D) float32 tokens`` of those images."""


class SegInputError(ValueError):
    """Masks or labels that cannot be used; the message names the item and the fix."""


# ----------------------------------------------------------------------------------------------- targets
def check_mask(mask: np.ndarray, num_classes: int, where: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``mask`` as uint8 (H, W), checked: values < ``num_classes`` or ``IGNORE_INDEX``, shape as given."""
    if mask is None:
        raise SegInputError(f"{where}: the dataset has no segmentation masks; the seg suite needs one with per-pixel labels (shapes:..., ade20k:root=DIR)")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise SegInputError(f"{where}: mask has shape {mask.shape}; expected (H, W) class indices")
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise SegInputError(f"{where}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}; masks must have their image's size")
    bad = (mask != IGNORE_INDEX) & (mask >= num_classes)
    if bad.any():
        raise SegInputError(f"{where}: label id {int(mask[bad].max())} beyond the class count {num_classes} (valid 0..{num_classes - 1}, {IGNORE_INDEX} = ignore); fix the annotation or the dataset's class list")
    return mask.astype(np.uint8, copy=False)


def patch_targets(masks: np.ndarray, grid: tuple[int, int], patch: tuple[int, int], num_classes: int) -> np.ndarray:
    """(n, h*w, C) bool: class c is on for patch (i, j) when any pixel of rows ``i*ph:(i+1)*ph`` and
    columns ``j*pw:(j+1)*pw`` of the mask holds c. ``IGNORE_INDEX`` pixels set nothing; pixels beyond
    the grid (a resolution the patch size does not divide) belong to no patch."""
    (h, w), (ph, pw) = grid, patch
    masks = np.asarray(masks)
    n, height, width = masks.shape
    if h * ph > height or w * pw > width:
        raise SegInputError(f"a {h}x{w} grid of {ph}x{pw} patches needs {h * ph}x{w * pw} mask pixels; masks are {height}x{width}")
    cells = masks[:, : h * ph, : w * pw].reshape(n, h, ph, w, pw).transpose(0, 1, 3, 2, 4).reshape(n * h * w, ph * pw)
    values = cells.astype(np.int64)
    if ((values != IGNORE_INDEX) & (values >= num_classes)).any():
        raise SegInputError(f"label id {int(values[(values != IGNORE_INDEX) & (values >= num_classes)].max())} beyond the class count {num_classes}")
    values[values == IGNORE_INDEX] = num_classes  # a spare column that is dropped
    presence = np.zeros((n * h * w, num_classes + 1), dtype=bool)
    presence[np.repeat(np.arange(n * h * w), ph * pw), values.reshape(-1)] = True
    return presence[:, :num_classes].reshape(n, h * w, num_classes)


def cached_tokens(array: np.ndarray) -> TokenSource:
    """A token source reading rows of a (memory-mapped) (n, h*w, D) array."""
    return lambda indices: torch.from_numpy(np.asarray(array[np.asarray(indices)], dtype=np.float32))


# ----------------------------------------------------------------------------------------------- schedule
def warmup_then(steps: int, warmup: int, decay: Callable[[float], float]) -> Callable[[int], float]:
    """LR factor per step: linear warm-up over ``warmup`` steps, then ``decay(progress in [0, 1])``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return decay((step - warmup) / max(1, steps - warmup))

    return factor


def effective_warmup(warmup: int, total_steps: int) -> int:
    """The protocol's warm-up, capped at a fifth of a schedule too short to hold it (demo-sized data)."""
    return max(1, min(warmup, total_steps // 5))


def epochs_for(epochs: int, steps_per_epoch: int, min_steps: int) -> int:
    """``epochs``, raised until the schedule holds at least ``min_steps`` optimizer steps: on a small
    dataset a few epochs are a few dozen steps, which leaves a probe at its initial, input-blind answer."""
    return max(epochs, math.ceil(min_steps / max(1, steps_per_epoch)))


# ----------------------------------------------------------------------------------------------- patch probe
@dataclass
class PatchProbeConfig:
    """The study's patch-level probe: MLP hidden 1024, AdamW wd 0.01, lr 1e-3 cosine to 1e-4 after 500
    warm-up steps, batches of 32 images, 5 epochs (raised to at least ``min_steps`` optimizer steps on small
    data), best epoch on ``holdout`` of train, ``seeds`` runs."""

    hidden: int = 1024
    lr: float = 1e-3
    final_lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    batch_images: int = 32
    epochs: int = 5
    min_steps: int = 1000
    seeds: int = 3
    holdout: float = 0.1
    threshold: float = 0.5
    seed: int = 0


@dataclass
class PatchScores:
    """Macro patch recall / precision / F1 in % (over classes with eval positives), per class and per image."""

    recall: float
    precision: float
    f1: float
    per_class_recall: np.ndarray
    per_image_recall: np.ndarray


@dataclass
class PatchProbeResult:
    """Mean and std over seeds of the patch scores, per-image recall averaged over seeds, the chosen epochs."""

    mean: dict[str, float]
    std: dict[str, float]
    per_seed: list[dict[str, float]]
    per_image_recall: np.ndarray
    best_epochs: list[int]
    warmup_steps: int
    steps: int
    n_train: int
    n_eval: int
    epochs: int = 0
    eval_probabilities: torch.Tensor | None = None  # (n, N, C) of the last seed, for the constant-prediction check
    prior: torch.Tensor | None = None  # (C,) share of train patches carrying each class


def patch_scores(probabilities: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> PatchScores:
    """Scores of (n, N, C) probabilities against (n, N, C) bool targets; patches without any class
    (only ignore pixels) are left out. Precision of a class never predicted is 0."""
    valid = targets.any(dim=-1)
    predicted = (probabilities >= threshold) & valid[..., None]
    targets = targets & valid[..., None]
    tp = (predicted & targets).sum(dim=(0, 1)).double()
    fp = (predicted & ~targets).sum(dim=(0, 1)).double()
    fn = (~predicted & targets).sum(dim=(0, 1)).double()
    present = (tp + fn) > 0
    if not present.any():
        raise SegInputError("the evaluation split has no labelled patches (every mask pixel is ignore)")
    recall = tp / (tp + fn).clamp_min(1)
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), torch.zeros_like(tp))
    f1 = torch.where(recall + precision > 0, 2 * recall * precision / (recall + precision).clamp_min(1e-12), torch.zeros_like(tp))
    image_tp = (predicted & targets).sum(dim=1).double()
    image_pos = targets.sum(dim=1).double()
    image_present = image_pos > 0
    per_image = torch.where(image_present, image_tp / image_pos.clamp_min(1), torch.zeros_like(image_tp)).sum(1) / image_present.sum(1).clamp_min(1)
    return PatchScores(
        recall=100 * float(recall[present].mean()), precision=100 * float(precision[present].mean()), f1=100 * float(f1[present].mean()),
        per_class_recall=(100 * recall).numpy(), per_image_recall=(100 * per_image).numpy(),
    )


def patch_counts(probabilities: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
    """(n, 3, C) per-image true positives, false positives and false negatives of each class over the
    labelled patches, the sums ``patch_scores`` divides (so resampled images can be re-scored exactly)."""
    valid = targets.any(dim=-1)
    predicted = (probabilities >= threshold) & valid[..., None]
    targets = targets & valid[..., None]
    return torch.stack([(predicted & targets).sum(1), (predicted & ~targets).sum(1), (~predicted & targets).sum(1)], dim=1).numpy()


def macro_from_counts(counts: np.ndarray, metric: str) -> float:
    """Macro recall, precision or F1 in % from (n, 3, C) counts, over the classes with positives (as
    ``patch_scores``)."""
    tp, fp, fn = np.asarray(counts, dtype=np.float64).sum(axis=0)
    present = tp + fn > 0
    recall = tp / np.maximum(tp + fn, 1)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    f1 = np.where(recall + precision > 0, 2 * recall * precision / np.maximum(recall + precision, 1e-12), 0.0)
    values = {"recall": recall, "precision": precision, "f1": f1}[metric]
    return 100 * float(values[present].mean()) if present.any() else float("nan")


def constant_patches(probabilities: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> str:
    """'' unless every labelled patch gets the same predicted class set (then the reason)."""
    predicted = (probabilities >= threshold)[targets.any(dim=-1)]
    if predicted.shape[0] and bool((predicted == predicted[0]).all()):
        return f"its predictions are constant: every patch gets the class set {predicted[0].nonzero().flatten().tolist()}"
    return ""


def constant_areas(masks: Sequence[np.ndarray], label: int, num_classes: int) -> np.ndarray:
    """(n, 4, C) areas (``seg_areas``) of the trivial segmenter that paints every pixel ``label``."""
    return np.stack([seg_areas(torch.full(np.shape(m), label), torch.from_numpy(np.asarray(m)), num_classes).numpy() for m in masks])


def majority_pixel_class(masks: Sequence[np.ndarray], num_classes: int) -> int:
    """The most frequent labelled (not ignore) pixel class of ``masks``."""
    counts = sum(np.bincount(np.asarray(m).ravel(), minlength=256)[:num_classes] for m in masks)
    return int(np.argmax(counts))


def constant_segmentation(areas: np.ndarray) -> str:
    """'' unless the segmenter predicted one class for every pixel of every image (then the reason)."""
    predicted = np.asarray(areas)[:, 2].sum(axis=0) > 0
    return f"its predictions are constant: every pixel is class {int(predicted.argmax())}" if predicted.sum() == 1 else ""


class PatchMLP(nn.Module):
    """Linear(D, hidden) -> GELU -> Linear(hidden, C), applied to every patch token."""

    def __init__(self, dim: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


def _predict(model: nn.Module, source: TokenSource, n: int, batch: int, device: str) -> torch.Tensor:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, n, batch):
            out.append(torch.sigmoid(model(source(np.arange(start, min(start + batch, n))).to(device))).cpu())
    return torch.cat(out)


def _threads(device: str, work: int) -> int:
    """One thread for small CPU matmuls (see probes.threads: on shared cores OpenMP waits dominate them; the
    patch MLP on 800 shapes images at 64 px trained in 12 s on one thread, 48 s on two busy cores)."""
    return 1 if torch.device(device).type == "cpu" and work < SINGLE_THREAD_WORK * 8 else torch.get_num_threads()


def patch_probe(
    train: TokenSource, train_targets: np.ndarray, evaluation: TokenSource, eval_targets: np.ndarray,
    dim: int, config: PatchProbeConfig = PatchProbeConfig(), device: str = "cpu", progress: Callable[[str], None] | None = None,
) -> PatchProbeResult:
    """Train the patch MLP ``config.seeds`` times on ``train`` (tokens of images 0..n-1, targets (n, N, C)
    bool) and score the best epoch of each (macro F1 on the held-out part of train) on ``evaluation``."""
    with at_most_threads(_threads(device, config.batch_images * train_targets.shape[1] * dim * config.hidden)):
        return _patch_probe(train, train_targets, evaluation, eval_targets, dim, config, device, progress)


def _patch_probe(train, train_targets, evaluation, eval_targets, dim, config, device, progress) -> PatchProbeResult:
    n_train, _, num_classes = train_targets.shape
    if n_train < 2:
        raise SegInputError(f"the patch probe needs at least 2 training images (one held out), got {n_train}")
    eval_y = torch.from_numpy(np.asarray(eval_targets, dtype=bool))
    per_seed, per_image, best_epochs = [], [], []
    warmup = steps = 0
    for run in range(config.seeds):
        seed = config.seed + run
        rng = np.random.default_rng(seed)
        order = rng.permutation(n_train)
        held_count = max(1, round(config.holdout * n_train))
        held, fit = np.sort(order[:held_count]), order[held_count:]
        torch.manual_seed(seed)
        model = PatchMLP(dim, config.hidden, num_classes).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        per_epoch = math.ceil(len(fit) / config.batch_images)
        epochs = epochs_for(config.epochs, per_epoch, config.min_steps)
        steps = per_epoch * epochs
        warmup = effective_warmup(config.warmup_steps, steps)
        floor = config.final_lr / config.lr
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then(steps, warmup, lambda p, floor=floor: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))))
        held_y = torch.from_numpy(np.asarray(train_targets[held], dtype=bool))
        held_source: TokenSource = lambda idx, held=held: train(held[idx])
        best = (-1.0, 0, None)
        for epoch in range(epochs):
            model.train()
            shuffled = rng.permutation(fit)
            for start in range(0, len(shuffled), config.batch_images):
                batch = np.sort(shuffled[start : start + config.batch_images])
                tokens = train(batch).to(device)
                targets = torch.from_numpy(np.asarray(train_targets[batch], dtype=bool)).to(device)
                valid = targets.any(dim=-1)
                logits = model(tokens)
                loss = F.binary_cross_entropy_with_logits(logits[valid], targets[valid].float())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            score = patch_scores(_predict(model, held_source, len(held), config.batch_images, device), held_y, config.threshold).f1
            if score > best[0]:
                best = (score, epoch, copy.deepcopy(model.state_dict()))
            if progress:
                progress(f"patch probe seed {seed} epoch {epoch + 1}/{epochs}: held-out macro F1 {score:.2f}")
        model.load_state_dict(best[2])
        probabilities = _predict(model, evaluation, len(eval_y), config.batch_images, device)
        scores = patch_scores(probabilities, eval_y, config.threshold)
        per_seed.append({"recall": scores.recall, "precision": scores.precision, "f1": scores.f1})
        per_image.append(scores.per_image_recall)
        best_epochs.append(best[1] + 1)
    keys = ("recall", "precision", "f1")
    return PatchProbeResult(
        mean={k: float(np.mean([s[k] for s in per_seed])) for k in keys},
        std={k: float(np.std([s[k] for s in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0 for k in keys},
        per_seed=per_seed, per_image_recall=np.mean(per_image, axis=0), best_epochs=best_epochs,
        warmup_steps=warmup, steps=steps, n_train=n_train, n_eval=len(eval_y), epochs=epochs, eval_probabilities=probabilities,
        prior=torch.from_numpy(patch_prior(train_targets)),
    )


def patch_prior(targets: np.ndarray) -> np.ndarray:
    """(C,) share of the labelled patches (any class) that carry each class: what an input-blind probe
    trained with BCE converges to predicting for every patch."""
    targets = np.asarray(targets, dtype=bool)
    valid = targets.any(axis=-1)
    return targets[valid].mean(axis=0) if valid.any() else np.zeros(targets.shape[-1])


# ----------------------------------------------------------------------------------------------- metrics
def seg_areas(prediction: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(4, C) int64 areas of one image, as mmseg's ``IoUMetric.intersect_and_union``: intersection,
    union, predicted and labelled pixels per class, over the pixels whose label is not ignore."""
    keep = label != IGNORE_INDEX
    prediction, label = prediction[keep].long(), label[keep].long()
    intersect = torch.bincount(prediction[prediction == label], minlength=num_classes)[:num_classes]
    area_pred = torch.bincount(prediction, minlength=num_classes)[:num_classes]
    area_label = torch.bincount(label, minlength=num_classes)[:num_classes]
    return torch.stack([intersect, area_pred + area_label - intersect, area_pred, area_label])


def iou_metrics(areas: np.ndarray) -> dict[str, float]:
    """mIoU, mAcc (mean over classes of IoU / pixel accuracy; classes never labelled nor predicted are
    left out, as mmseg's nanmean does) and aAcc (all pixels), in %, from per-image (n, 4, C) areas."""
    total = np.asarray(areas, dtype=np.float64).sum(axis=0)
    intersect, union, _, label = total
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, acc = intersect / union, intersect / label
    return {"mIoU": 100 * float(np.nanmean(iou)), "mAcc": 100 * float(np.nanmean(acc)), "aAcc": 100 * float(intersect.sum() / max(label.sum(), 1))}


def per_image_miou(areas: np.ndarray) -> np.ndarray:
    """(n,) mIoU of each image alone in % (mean over the classes labelled or predicted in it)."""
    areas = np.asarray(areas, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = areas[:, 0] / areas[:, 1]
    counted = areas[:, 1] > 0
    return 100 * np.where(counted, iou, 0).sum(1) / np.maximum(counted.sum(1), 1)


def bootstrap_miou(areas: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the dataset mIoU (%) resampling images (their areas are summed)."""
    areas = np.asarray(areas, dtype=np.float64)
    rng = np.random.default_rng(seed)
    flat = areas.reshape(len(areas), -1)
    values = []
    for _ in range(n_boot):
        total = flat[rng.integers(0, len(areas), len(areas))].sum(0).reshape(areas.shape[1:])
        with np.errstate(divide="ignore", invalid="ignore"):
            values.append(100 * np.nanmean(total[0] / total[1]))
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


# ----------------------------------------------------------------------------------------------- fast head
@dataclass
class FastHeadConfig:
    """The linear head's optimiser on cached tokens: AdamW lr 1e-3, wd 0, linear warm-up then poly
    (power 1) decay, batches of 16 images, ``epochs`` passes (raised to at least ``min_steps`` optimizer
    steps on small data), no augmentation."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 1500
    batch_images: int = 16
    epochs: int = 20
    min_steps: int = PatchProbeConfig.min_steps  # one floor for both heads on cached tokens
    seed: int = 0


@dataclass
class MMSegConfig:
    """The mmseg linear protocol (:func:`probes.mmseg_linear.run_mmseg_linear`): ``iters`` (40k in the literature), AdamW ``lr`` / ``weight_decay``,
    ``warmup`` iterations then poly decay, ``batch_size`` crops, ``blocks`` (1: the last block's patch
    map; 4: the last four concatenated), ``crop`` (0: the encoder's resolution)."""

    iters: int = 40000
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 1500
    batch_size: int = 16
    blocks: int = 1
    crop: int = 0
    workers: int = 0
    seed: int = 0
    log_interval: int = 50


@dataclass
class FastHeadResult:
    metrics: dict[str, float]
    areas: np.ndarray  # (n, 4, C)
    predictions: dict[int, np.ndarray] = field(default_factory=dict)  # chosen eval images -> (R, R) uint8
    steps: int = 0
    warmup_steps: int = 0
    epochs: int = 0


def token_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, D) row-major tokens -> (B, D, h, w) using the encoder's own grid."""
    h, w = grid
    if tokens.shape[1] != h * w:
        raise SegInputError(f"{tokens.shape[1]} tokens do not fill the encoder's {h}x{w} grid")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def upsampled_logits(head: nn.Module, tokens: torch.Tensor, grid: tuple[int, int], size: Sequence[int], patch: tuple[int, int]) -> torch.Tensor:
    """Head logits on the patch map, bilinearly upsampled to the area the grid covers and padded
    (with the edge logits) to ``size`` when the patch size leaves a margin."""
    logits = head([token_map(tokens, grid)])
    covered = (grid[0] * patch[0], grid[1] * patch[1])
    logits = F.interpolate(logits, size=covered, mode="bilinear", align_corners=False)
    if covered != tuple(size):
        logits = F.pad(logits, (0, size[1] - covered[1], 0, size[0] - covered[0]), mode="replicate")
    return logits


def fast_linear_head(
    head: nn.Module, train: TokenSource, train_masks: np.ndarray, evaluation: TokenSource, eval_masks: np.ndarray,
    grid: tuple[int, int], patch: tuple[int, int], num_classes: int, config: FastHeadConfig = FastHeadConfig(),
    device: str = "cpu", keep: Sequence[int] = (), progress: Callable[[str], None] | None = None,
) -> FastHeadResult:
    """Train ``head`` (a BNHead taking ``[(B, D, h, w)]``) with cross-entropy (ignore 255) on cached
    tokens against the masks (n, R, R); score on the eval masks. ``keep``: eval images whose predicted
    masks are returned."""
    work = config.batch_images * int(np.prod(train_masks.shape[1:])) * num_classes
    with at_most_threads(_threads(device, work)):
        return _fast_linear_head(head, train, train_masks, evaluation, eval_masks, grid, patch, num_classes, config, device, keep, progress)


def _fast_linear_head(head, train, train_masks, evaluation, eval_masks, grid, patch, num_classes, config, device, keep, progress) -> FastHeadResult:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    head = head.to(device)
    n = len(train_masks)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    epochs = epochs_for(config.epochs, math.ceil(n / config.batch_images), config.min_steps)
    steps = math.ceil(n / config.batch_images) * epochs
    warmup = effective_warmup(config.warmup_steps, steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then(steps, warmup, lambda p: 1.0 - p))
    size = train_masks.shape[1:]
    for epoch in range(epochs):
        head.train()
        order = rng.permutation(n)
        total = 0.0
        for start in range(0, n, config.batch_images):
            batch = np.sort(order[start : start + config.batch_images])
            if len(batch) < 2:  # BatchNorm needs two samples; the last lone image waits for the next epoch
                continue
            logits = upsampled_logits(head, train(batch).to(device), grid, size, patch)
            target = torch.from_numpy(np.asarray(train_masks[batch], dtype=np.int64)).to(device)
            loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        if progress:
            progress(f"fast linear head epoch {epoch + 1}/{epochs}: loss {total / max(1, math.ceil(n / config.batch_images)):.3f}")
    head.eval()
    areas, predictions = [], {}
    with torch.no_grad():
        for start in range(0, len(eval_masks), config.batch_images):
            batch = np.arange(start, min(start + config.batch_images, len(eval_masks)))
            predicted = upsampled_logits(head, evaluation(batch).to(device), grid, eval_masks.shape[1:], patch).argmax(1).cpu()
            for row, index in enumerate(batch):
                areas.append(seg_areas(predicted[row], torch.from_numpy(np.asarray(eval_masks[index])), num_classes).numpy())
                if index in keep:
                    predictions[int(index)] = predicted[row].numpy().astype(np.uint8)
    areas = np.stack(areas)
    return FastHeadResult(iou_metrics(areas), areas, predictions, steps, warmup, epochs)
