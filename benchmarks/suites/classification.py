"""Suite ``cls``: classification probes on frozen features (docs/protocol.md section 1).

Per encoder, features of the train and val splits are taken from the feature store; for each feature
(pooled output ``cls`` and mean of patch tokens ``mean``, at the last block and any ``--layers``) it fits
a linear probe (regularisation chosen on train, never on val, and reported on val), kNN (k = 10, 20)
and the class-mean prototype classifier (both on the run's device), plus scikit-learn's
LogisticRegression when ``--sklearn`` is set. Accuracies are percentages with 95% bootstrap CIs. Each
row's trivial baseline (``extra["trivial_baseline"]``) is the accuracy of always answering the most
frequent train class(es); a probe not significantly above it, or whose correct items are exactly one
class's, is marked ``extra["degenerate"]`` (``evidence.baselines``).

Linear probes, by task name (``--linear``: ``auto`` (default), ``lbfgs``, ``sgd`` or ``both``):

- ``linear``: the protocol's objective (scikit-learn's L2 multinomial logistic regression) solved
  exactly by :func:`probes.logreg.logreg_probe` (full-batch L-BFGS on the run's device), C chosen by
  5-fold cross-validation over train below 10,000 train rows, else on one 10% held-out part as
  scikit-learn's standard recipe (``--linear-select``); ``--linear auto`` runs it whenever the
  standardised train features fit the device memory budget;
- ``linear_sgd``: the one-pass grid of minibatch heads (:func:`probes.linear.linear_probe`), which
  streams rows; ``auto`` runs it instead when the features do not fit.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.features import FeatureSet, extract_features, unreadable_items
from benchmarks.results import ResultRow
from benchmarks.validate import layers_out_of_range, layers_problem, parse_layers
from common.options import option
from evidence.baselines import constant_classifier, mean_check
from imagesets import LABELS
from probes.knn import knn_probe, prototype_probe
from probes.linear import ClassificationResult, LinearProbeConfig, fit_linear_head, linear_probe, sklearn_logreg_probe
from probes.logreg import DEFAULT_CS, DEFAULT_MEMORY_BUDGET, SELECTIONS, LogRegConfig, fits_in_memory, logreg_probe

from .base import LoadedEncoder, RunContext
from .spec import DataNeeds, register_suite

TRAIN_SPLIT, EVAL_SPLIT = "train", "val"
LINEAR_MODES = ("auto", "lbfgs", "sgd", "both")
KNN_KS = (10, 20)


@dataclass(frozen=True)
class ClsOptions:
    """Options of the ``cls`` suite (flags without a prefix: ``--linear-epochs``)."""

    layers: str = option("", "extra blocks to probe besides the output: -1,-2,-4 (negative = from the end) or all; suites on the same split share these features", check=layers_problem, metavar="BLOCKS")
    linear: str = option("auto", "linear probe: the exact L-BFGS logistic regression (task linear), the SGD grid of heads (task linear_sgd), both, or auto: L-BFGS when the features fit the device's memory", choices=LINEAR_MODES)
    linear_epochs: int = option(LinearProbeConfig.epochs, "linear_sgd and the loc suite's head: minimum epochs over train (every head takes at least 300 optimizer steps)", minimum=1)
    grid_extend: bool = option(LogRegConfig.path_extend, "extend the exact probe's C path and the SGD grid one step beyond an edge while the choice sits there (up to 3 steps)")
    linear_select: str = option(LogRegConfig.selection, "how the exact probe (task linear) chooses C: kfold, 5-fold cross-validation over train and the strongest regularisation within half a held-out noise of the best; holdout, one 10% held-out part of train and the first maximum (scikit-learn's standard recipe); auto, kfold below 10000 train rows, else holdout", choices=SELECTIONS)
    sklearn: bool = option(False, "also run scikit-learn's LogisticRegression reference probe (task logreg_sklearn; slow)")


def _check_loaded(options: ClsOptions, encoders: list[LoadedEncoder]) -> str:
    return layers_out_of_range(parse_layers(options.layers), encoders)


def sgd_config(options: ClsOptions, seed: int) -> LinearProbeConfig:
    """The SGD grid's settings, the same for cls's task ``linear_sgd`` and for the loc suite's head."""
    return LinearProbeConfig(epochs=options.linear_epochs, seed=seed, grid_extend=options.grid_extend)


def _selection_key(loaded: LoadedEncoder, data: str, config: LinearProbeConfig) -> tuple:
    return ("linear_sgd selection", loaded.encoder.weights_hash, data, repr(config))


def pooled_linear_head(context: RunContext, loaded: LoadedEncoder, train: FeatureSet, evaluation: FeatureSet, options: ClsOptions) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], dict]:
    """(weight, bias, classes) of a linear head on the pooled (``cls``) features of train, with the learning
    rate and weight decay that the SGD grid selects on train's held-out part (the selection of cls's task
    ``linear_sgd`` when this run computed it, else computed here the same way and shared), and a record of
    where they came from. The same whatever order the suites run in."""
    config = sgd_config(options, context.seed)
    key = _selection_key(loaded, context.data, config)
    if key not in context.shared:
        result = linear_probe(train.tensor("cls"), train.valid_labels(), evaluation.tensor("cls"), evaluation.valid_labels(), config=config, device=context.extraction.device)
        context.shared[key] = result.selected
    chosen = {"lr": float(context.shared[key]["lr"]), "weight_decay": float(context.shared[key]["weight_decay"])}
    head = fit_linear_head(train.tensor("cls"), train.valid_labels(), lr=chosen["lr"], weight_decay=chosen["weight_decay"], config=config, device=context.extraction.device)
    return head, {"source": "the SGD grid's selection on train's held-out part (cls task linear_sgd)", **chosen, "feature": "cls"}


def layer_labels(context: RunContext, loaded: LoadedEncoder, feature: str) -> dict:
    """``block`` (0-based index the row's features come from; the last block for ``cls``/``mean``) and
    ``layer_label`` (the block as the user wrote it in --layers, e.g. ``-1``; ``last`` for the output)."""
    last = loaded.encoder.num_layers - 1
    if "." not in feature:
        return {"block": last, "layer_label": "last"}
    block = int(feature.split(".")[0][1:])
    given = context.layers if isinstance(context.layers, list) else []
    label = next((str(g) for g in given if (g if g >= 0 else last + 1 + g) == block), str(block))
    return {"block": block, "layer_label": label}


def estimate_sklearn(train_x, n_classes: int) -> str:
    """An order-of-magnitude duration of scikit-learn's lbfgs grid, logged before it starts: about 200
    lbfgs iterations of n x dim x classes multiply-adds at ~1 GFLOP/s per fit (an assumption, not a
    measurement; the tqdm bar then shows the estimate from the fits actually done)."""
    n, dim = int(train_x.shape[0]), int(train_x.shape[1])
    seconds = 1.5e-9 * n * dim * n_classes * 200 * len(DEFAULT_CS)
    return f"{len(DEFAULT_CS)} fits on {n} x {dim} features, {n_classes} classes; roughly {seconds:.0f} s to {10 * seconds:.0f} s"


def feature_extra(context: RunContext, loaded: LoadedEncoder, feature: str) -> dict:
    """What tells a feature's rows apart: ``pooling``, ``block``, ``layer_label`` and, for an intermediate
    block (``L3.mean``), ``layer`` (rows of the last block carry no layer)."""
    extra = {"pooling": feature, **layer_labels(context, loaded, feature)}
    if "." in feature:
        layer, pooling = feature.split(".")
        extra.update(layer=int(layer[1:]), pooling=pooling)
    return extra


def majority_correct(train_y: torch.Tensor, eval_y: torch.Tensor, top: int = 1) -> np.ndarray:
    """Per-item correctness (eval order) of the trivial classifier that always answers the ``top`` most
    frequent train classes (ties: the smaller class id): the trivial baseline of top-1 / top-``top``."""
    counts = torch.bincount(train_y.long(), minlength=int(max(train_y.max(), eval_y.max())) + 1)
    frequent = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))[:top]
    return np.isin(eval_y.numpy(), frequent)


def _rows_for(context: RunContext, loaded: LoadedEncoder, result: ClassificationResult, task: str, feature: str, eval_split, n_classes: int, cached: bool,
              train_y: torch.Tensor, eval_y: torch.Tensor) -> list[ResultRow]:
    per_item = context.save_per_item(result.correct.astype("uint8"), loaded.name, "cls", task, feature)
    # JSON has no Inf (e.g. the equivalent C of weight decay 0): keep such values as text.
    selected = {key: value if not isinstance(value, float) or math.isfinite(value) else str(value) for key, value in result.selected.items()}
    extra = {"selected": selected, "n_tried": result.n_tried, "split": EVAL_SPLIT, "n_classes": n_classes, "chance": 100.0 / n_classes,
             "features_cached": cached, **feature_extra(context, loaded, feature)}
    # at_edge: the choice sits on an edge of the searched range (the optimum may lie beyond); extended /
    # not_fitted: values the exact probe's path added beyond an edge / skipped after its held-out peak.
    if "at_edge" in result.extra:
        extra["at_edge"] = result.extra["at_edge"]
    extra.update({key: result.extra[key] for key in ("extended", "not_fitted") if result.extra.get(key)})
    common = dict(suite="cls", task=task, dataset=context.data, dataset_fingerprint=eval_split.fingerprint, n=result.n_eval)
    check = mean_check(result.correct, majority_correct(train_y, eval_y), scale=100.0, constant=constant_classifier(result.correct, eval_y.numpy()), seed=context.seed)
    rows = [context.row(loaded, metric="top1", value=result.top1, ci_low=result.top1_ci[0], ci_high=result.top1_ci[1], per_item=per_item,
                        extra={**extra, **check.extra()}, **common)]
    if result.top5 is not None:
        top5_items = context.save_per_item(result.top5_correct.astype("uint8"), loaded.name, "cls", task, feature, "top5") if result.top5_correct is not None else ""
        ci = result.top5_ci or (None, None)
        top5_check = mean_check(result.top5_correct, majority_correct(train_y, eval_y, 5), scale=100.0, seed=context.seed) if result.top5_correct is not None else None
        rows.append(context.row(loaded, metric="top5", value=result.top5, ci_low=ci[0], ci_high=ci[1], per_item=top5_items,
                                extra={**extra, "chance": min(100.0, 500.0 / n_classes), **(top5_check.extra() if top5_check else {})}, **common))
    return rows


def linear_results(
    context: RunContext, loaded: LoadedEncoder, feature: str, train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor
) -> dict[str, ClassificationResult]:
    """The linear probe(s) that ``--linear`` asks for, keyed by task name (see the module docstring)."""
    options: ClsOptions = context.options
    mode = options.linear
    device = context.extraction.device
    if mode == "auto":
        n_classes = int(train_y.unique().numel())
        mode = "lbfgs" if fits_in_memory(train_x.shape[0], train_x.shape[1], n_classes, _memory_budget(device)) else "sgd"
    results = {}
    if mode in ("lbfgs", "both"):
        config = LogRegConfig(seed=context.seed, path_extend=options.grid_extend, selection=options.linear_select)
        results["linear"] = logreg_probe(train_x, train_y, eval_x, eval_y, config=config, device=device)
    if mode in ("sgd", "both"):
        config = sgd_config(options, context.seed)
        results["linear_sgd"] = linear_probe(train_x, train_y, eval_x, eval_y, config=config, device=device)
        if feature == "cls":  # the loc suite's head reuses this selection
            context.shared[_selection_key(loaded, context.data, config)] = results["linear_sgd"].selected
    return results


def _memory_budget(device: str | torch.device) -> int:
    """Bytes the full-batch solver may hold: half the free GPU memory, or a fixed 8 GiB elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return DEFAULT_MEMORY_BUDGET


@register_suite(
    "cls", options=ClsOptions, needs=DataNeeds(all_of=(LABELS,), splits=(TRAIN_SPLIT, EVAL_SPLIT)),
    headline=(("linear", "top1", "pooling=cls"), ("linear_sgd", "top1", "pooling=cls"), ("knn20", "top1", "pooling=cls")), variant_fields=("layer", "pooling"),
    check_loaded=_check_loaded, order=10, summary="linear, kNN and prototype probes on frozen features",
)
def classification_suite(context: RunContext, encoders: list[LoadedEncoder]) -> list[ResultRow]:
    train_split = context.open_split(TRAIN_SPLIT)
    eval_split = context.open_split(EVAL_SPLIT)
    n_classes = len(train_split.classes)
    rows: list[ResultRow] = []
    for loaded in encoders:
        train = extract_features(loaded.encoder, train_split, context.cache_dir, layers=context.layers, config=context.extraction, log=context.log)
        evaluation = extract_features(loaded.encoder, eval_split, context.cache_dir, layers=context.layers, config=context.extraction, log=context.log)
        train_y, eval_y = train.valid_labels(), evaluation.valid_labels()
        cached = bool(train.meta.get("cache_hit") and evaluation.meta.get("cache_hit"))
        for feature in train.arrays:
            train_x, eval_x = train.tensor(feature), evaluation.tensor(feature)
            results = linear_results(context, loaded, feature, train_x, train_y, eval_x, eval_y)
            device = context.extraction.device
            ks = [k for k in KNN_KS if k <= train_x.shape[0]]
            for k, result in (knn_probe(train_x, train_y, eval_x, eval_y, ks=tuple(ks), device=device) if ks else {}).items():
                results[f"knn{k}"] = result
            for k in sorted(set(KNN_KS) - set(ks)):
                reason = f"k = {k} neighbours need at least {k} train images; {context.data} has {train_x.shape[0]}"
                rows.append(context.skipped(loaded, reason, task=f"knn{k}", metric="top1", extra=feature_extra(context, loaded, feature)))
            results["prototype"] = prototype_probe(train_x, train_y, eval_x, eval_y, device=device)
            if context.options.sklearn:
                started = time.perf_counter()
                context.log(f"sklearn LogisticRegression reference on {loaded.name} / {feature}: {estimate_sklearn(train_x, n_classes)}")
                results["logreg_sklearn"] = sklearn_logreg_probe(train_x, train_y, eval_x, eval_y, Cs=DEFAULT_CS, seed=context.seed, progress=context.extraction.progress)
                context.log(f"sklearn LogisticRegression on {loaded.name} / {feature} took {time.perf_counter() - started:.1f} s")
            for task, result in results.items():
                rows.extend(_rows_for(context, loaded, result, task, feature, eval_split, n_classes, cached, train_y, eval_y))
        bad = train.bad_count + evaluation.bad_count
        named = {split.split: unreadable_items(features, split) for features, split in ((train, train_split), (evaluation, eval_split)) if features.bad_count}
        rows.append(context.row(
            loaded, suite="cls", task="data", dataset=context.data, dataset_fingerprint=eval_split.fingerprint,
            metric="unreadable_images", value=float(bad), higher_is_better=False, n=len(train.valid) + len(evaluation.valid),
            extra={"unreadable": named} if named else {},
        ))
    return rows
