"""Suite ``seg``: segmentation probes on frozen encoders (docs/protocol.md section 2), three protocols.

* ``patch_probe`` (the study's): a 2-layer MLP per cached patch token against multi-label patch targets
  at the encoder's own grid; macro patch recall (the study's metric), precision and F1 in %, mean and
  std over ``seg_seeds`` seeds (std in ``extra["std"]``).
* ``fast_linear``: a BNHead on the cached last-block patch map, logits upsampled to the mask at the
  encoder's input crop; mIoU / mAcc / aAcc in %, mIoU with a 95% bootstrap CI over images.
* ``mmseg_linear`` (the literature's): the same head trained by mmsegmentation with its augmentation,
  ``seg_iters`` iterations, sliding-window inference, ``IoUMetric``; CI as above.

Train on the ``train`` split, report on ``val``. A dataset stored as an ``ADEChallengeData2016`` folder
(``ImageSplit.seg_folder``: ``ade20k:root=DIR``) goes to mmseg as mmseg's ``ADE20KDataset``; other
datasets with masks (the shapes world) are written once to such a folder in the cache and read by
mmseg's ``BaseSegDataset`` with their own class names (``imagesets.seg_folder``). Per-image
scores (patch recall, mIoU) go to ``per_item/`` and a PNG of a few predicted masks to ``extra["figure"]``.
Options: :class:`SegOptions`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.features import FeatureSet, extract_features, token_grid
from benchmarks.results import ResultRow
from common.options import option
from encoders import Encoder
from encoders.base import token_stride
from evidence.baselines import check_above
from imagesets import MASKS, ImageSplit
from imagesets.seg_folder import export_seg_folder, item_stem
from probes.segmentation import (
    FastHeadConfig,
    MMSegConfig,
    PatchProbeConfig,
    SegInputError,
    bootstrap_miou,
    check_mask,
    constant_areas,
    constant_patches,
    constant_segmentation,
    iou_metrics,
    macro_from_counts,
    majority_pixel_class,
    patch_counts,
    patch_probe,
    patch_targets,
    per_image_miou,
)

from .base import LoadedEncoder, RunContext
from .spec import DataNeeds, register_suite

TRAIN_SPLIT, EVAL_SPLIT = "train", "val"
PROTOCOLS = ("patch_probe", "fast_linear", "mmseg_linear")
FIGURE_IMAGES = 4


@dataclass(frozen=True)
class SegOptions:
    """Options of the ``seg`` suite (flags ``--seg-...``)."""

    protocols: tuple[str, ...] = option(PROTOCOLS, "protocols to run (comma list)", choices=PROTOCOLS, metavar="LIST")
    # The defaults are the probes' own (probes.segmentation's configs), written there once.
    epochs: int = option(PatchProbeConfig.epochs, "patch_probe: epochs (the study: 5)", minimum=1)
    seeds: int = option(PatchProbeConfig.seeds, "patch_probe: seeds (mean and std over them)", minimum=1)
    head_epochs: int = option(FastHeadConfig.epochs, "fast_linear: epochs of the BNHead on cached tokens", minimum=1)
    min_steps: int = option(PatchProbeConfig.min_steps, "patch_probe and fast_linear: at least this many optimizer steps (epochs are raised on small datasets, where a few epochs leave a probe at its input-blind answer)", minimum=0)
    iters: int = option(MMSegConfig.iters, "mmseg_linear: iterations (the literature: 40k-80k)", minimum=1)
    mmseg_lr: float = option(MMSegConfig.lr, "mmseg_linear: AdamW peak learning rate (the literature: 1e-3 over 40k iterations; a short schedule needs more)", above=0)
    blocks: int = option(MMSegConfig.blocks, "fast_linear and mmseg_linear: heads on the last block's patch map (1) or the last four concatenated (4)", choices=(1, 4))


def encoder_patch(encoder: Encoder, grid: tuple[int, int]) -> tuple[int, int]:
    """Input pixels per patch token (ph, pw): the patch embedding's stride when it has one (a hybrid
    stem's included; a resolution the stride does not divide leaves a margin outside the grid), else
    resolution / grid."""
    stride = token_stride(encoder.model)
    if stride is not None:
        return stride
    resolution = encoder.preprocess.resolution
    if resolution % grid[0] or resolution % grid[1]:
        raise SegInputError(f"encoder {encoder.name}: its {grid[0]}x{grid[1]} grid does not divide the {resolution} px input and it has no patch_embed.patch_size to place the patches")
    return resolution // grid[0], resolution // grid[1]


def encoder_masks(split: ImageSplit, encoder: Encoder, num_classes: int) -> np.ndarray:
    """(n, R, R) uint8 masks as the encoder sees its images: the eval transform's resize of the shorter
    side and centre crop, nearest neighbour. Checked: label ids, size against the image."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    pre = encoder.preprocess
    resize = round(pre.resolution / pre.crop_pct)
    out = np.empty((len(split), pre.resolution, pre.resolution), dtype=np.uint8)
    for index in range(len(split)):
        where = f"{split.spec}/{split.split} item {split.item_id(index)}"
        raw = split.seg_mask(index)
        width, height = split.load_image(index).size
        mask = Image.fromarray(check_mask(raw, num_classes, where, shape=(height, width)))
        mask = TF.center_crop(TF.resize(mask, resize, interpolation=InterpolationMode.NEAREST), pre.resolution)
        out[index] = np.asarray(mask)
    return out


def _palette(num_classes: int) -> np.ndarray:
    colours = np.random.default_rng(7).integers(40, 256, size=(256, 3)).astype(np.uint8)
    colours[IGNORE_COLOUR_INDEX] = 0
    return colours


IGNORE_COLOUR_INDEX = 255


def mask_figure(items: list[tuple[Image.Image, np.ndarray, np.ndarray]], path: Path, cell: int = 128) -> None:
    """A PNG with one row per item: image | ground truth | prediction (class colours; ignore black)."""
    palette = _palette(256)
    canvas = Image.new("RGB", (3 * cell, cell * len(items)), (255, 255, 255))
    for row, (image, truth, prediction) in enumerate(items):
        for column, picture in enumerate((image.convert("RGB"), Image.fromarray(palette[truth]), Image.fromarray(palette[prediction]))):
            resample = Image.BILINEAR if column == 0 else Image.NEAREST
            canvas.paste(picture.resize((cell, cell), resample), (column * cell, row * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def _figure_path(context: RunContext, loaded: LoadedEncoder, task: str) -> Path:
    return context.run_dir / "figures" / f"seg__{loaded.name}__{task}.png"


def _token_source(features: FeatureSet, name: str):
    rows = np.flatnonzero(features.valid)
    array = features.arrays[name]
    return rows, (lambda indices: torch.from_numpy(np.asarray(array[rows[np.asarray(indices)]], dtype=np.float32)))


@register_suite(
    "seg", options=SegOptions, needs=DataNeeds(all_of=(MASKS,), splits=(TRAIN_SPLIT, EVAL_SPLIT)),
    headline=(("patch_probe", "macro_patch_recall"), ("fast_linear", "mIoU"), ("mmseg_linear", "mIoU")),
    flag_prefix="seg", order=20, summary="patch-level probe and linear segmentation heads on frozen features",
)
def segmentation_suite(context: RunContext, encoders: list[LoadedEncoder]) -> list[ResultRow]:
    options: SegOptions = context.options
    train_split, eval_split = context.open_split(TRAIN_SPLIT), context.open_split(EVAL_SPLIT)
    classes = list(train_split.seg_classes)
    rows: list[ResultRow] = []
    common = {"suite": "seg", "dataset": context.data, "dataset_fingerprint": eval_split.fingerprint}
    masks: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    for loaded in encoders:
        encoder = loaded.encoder
        grid = token_grid(encoder)
        patch = encoder_patch(encoder, grid)
        key = (encoder.preprocess.cache_key(),)
        if key not in masks:
            masks[key] = (encoder_masks(train_split, encoder, len(classes)), encoder_masks(eval_split, encoder, len(classes)))
        train_masks, eval_masks = masks[key]
        needs_tokens = any(p in options.protocols for p in ("patch_probe", "fast_linear"))
        if needs_tokens:
            last = encoder.num_layers - 1
            blocks = list(range(last - options.blocks + 1, last + 1))
            train = extract_features(encoder, train_split, context.cache_dir, config=context.extraction, log=context.log, patch_layers=blocks)
            evaluation = extract_features(encoder, eval_split, context.cache_dir, config=context.extraction, log=context.log, patch_layers=blocks)
            if evaluation.bad_count:
                raise SegInputError(f"{evaluation.bad_count} images of {eval_split.spec}/{EVAL_SPLIT} are unreadable; per-image segmentation scores need every image (fix or remove them)")
            train_rows, train_source = _token_source(train, f"tokens.L{last}")
            _, eval_source = _token_source(evaluation, f"tokens.L{last}")
        if "patch_probe" in options.protocols:
            rows.extend(_patch_probe_rows(context, loaded, options, common, grid, patch, classes, train_source, train_masks[train_rows], eval_source, eval_masks))
        if "fast_linear" in options.protocols:
            rows.extend(_fast_rows(context, loaded, options, common, grid, patch, classes, train, evaluation, train_rows, train_masks, eval_masks, eval_split))
        if "mmseg_linear" in options.protocols:
            rows.extend(_mmseg_rows(context, loaded, options, common, classes, train_split, eval_split, train_masks))
    return rows


def _patch_probe_rows(context, loaded, options, common, grid, patch, classes, train_source, train_masks, eval_source, eval_masks) -> list[ResultRow]:
    config = PatchProbeConfig(epochs=options.epochs, min_steps=options.min_steps, seeds=options.seeds, seed=context.seed)
    eval_targets = patch_targets(eval_masks, grid, patch, len(classes))
    result = patch_probe(
        train_source, patch_targets(train_masks, grid, patch, len(classes)), eval_source, eval_targets,
        dim=loaded.encoder.embed_dim, config=config, device=context.extraction.device, progress=context.log,
    )
    per_item = context.save_per_item(result.per_image_recall.astype(np.float32), loaded.name, "seg", "patch_probe", "recall")
    extra = {"protocol": "study patch-level probe (MLP 1024, BCE, macro over classes)", "seeds": options.seeds, "per_seed": result.per_seed,
             "best_epochs": result.best_epochs, "epochs": result.epochs, "warmup_steps": result.warmup_steps, "steps": result.steps,
             "grid": list(grid), "patch": list(patch), "split": EVAL_SPLIT, "n_train": result.n_train,
             "trivial": "the input-blind probe: every patch gets the classes carried by at least half of the train patches (last seed's predictions tested)"}
    # Trivial baseline: the prior thresholded as the probe is; tested on the same resampled images.
    targets = torch.from_numpy(np.asarray(eval_targets, dtype=bool))
    probe_counts = patch_counts(result.eval_probabilities, targets, config.threshold)
    trivial_counts = patch_counts(result.prior.float().expand(targets.shape), targets, config.threshold)
    constant = constant_patches(result.eval_probabilities, targets, config.threshold)
    rows = []
    for metric in ("recall", "precision", "f1"):
        check = check_above(lambda i, m=metric: macro_from_counts(probe_counts[i], m), lambda i, m=metric: macro_from_counts(trivial_counts[i], m),
                            len(targets), constant=constant, seed=context.seed)
        rows.append(context.row(
            loaded, task="patch_probe", metric=f"macro_patch_{metric}", value=result.mean[metric], n=result.n_eval,
            per_item=per_item if metric == "recall" else "", extra={**extra, "std": result.std[metric], **check.extra()}, **common,
        ))
    return rows


def _seg_rows(context, loaded, common, task: str, metrics: dict, areas: np.ndarray, trivial: tuple[int, np.ndarray], figure: str, extra: dict) -> list[ResultRow]:
    """mIoU / mAcc / aAcc rows; ``trivial`` = (class, areas (n, 4, C) of painting every pixel that class, the
    images in ``areas``' order): each metric's trivial baseline, tested on the same resampled images."""
    ci = bootstrap_miou(areas, seed=context.seed)
    per_item = context.save_per_item(per_image_miou(areas).astype(np.float32), loaded.name, "seg", task, "mIoU")
    label, trivial_areas = trivial
    extra = {**extra, "figure": figure, "split": EVAL_SPLIT, "per_item_score": "per-image mIoU (%)",
             "trivial": f"every pixel the most frequent train class ({label})"}
    constant = constant_segmentation(areas)
    rows = []
    for metric in ("mIoU", "mAcc", "aAcc"):
        check = check_above(lambda i, m=metric: iou_metrics(areas[i])[m], lambda i, m=metric: iou_metrics(trivial_areas[i])[m], len(areas), constant=constant, seed=context.seed)
        bounds = {"ci_low": ci[0], "ci_high": ci[1], "per_item": per_item} if metric == "mIoU" else {}
        rows.append(context.row(loaded, task=task, metric=metric, value=metrics[metric], n=len(areas), extra={**extra, **check.extra()}, **bounds, **common))
    return rows


def _fast_rows(context, loaded, options, common, grid, patch, classes, train, evaluation, train_rows, train_masks, eval_masks, eval_split) -> list[ResultRow]:
    from probes.mmseg_linear import BNHead
    from probes.segmentation import fast_linear_head

    encoder = loaded.encoder
    last = encoder.num_layers - 1
    names = [f"tokens.L{layer}" for layer in range(last - options.blocks + 1, last + 1)]
    sources = [_token_source(train, name)[1] for name in names]
    eval_sources = [_token_source(evaluation, name)[1] for name in names]
    # Several blocks: their channels side by side, as mmseg's resize_concat does on one grid.
    train_source = (lambda idx: torch.cat([s(idx) for s in sources], dim=-1)) if len(names) > 1 else sources[0]
    eval_source = (lambda idx: torch.cat([s(idx) for s in eval_sources], dim=-1)) if len(names) > 1 else eval_sources[0]
    width = encoder.embed_dim * len(names)
    torch.manual_seed(context.seed)
    head = BNHead(in_channels=width, channels=width, num_classes=len(classes), in_index=-1, dropout_ratio=0.0, align_corners=False,
                  loss_decode={"type": "mmseg.CrossEntropyLoss", "use_sigmoid": False, "loss_weight": 1.0})
    keep = list(range(min(FIGURE_IMAGES, len(eval_masks))))
    config = FastHeadConfig(epochs=options.head_epochs, min_steps=options.min_steps, seed=context.seed)
    result = fast_linear_head(head, train_source, train_masks[train_rows], eval_source, eval_masks, grid, patch, len(classes),
                              config=config, device=context.extraction.device, keep=keep, progress=context.log)
    transform = encoder.preprocess
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    def seen(index: int) -> Image.Image:
        image = eval_split.load_image(index)
        return TF.center_crop(TF.resize(image, round(transform.resolution / transform.crop_pct), interpolation=InterpolationMode.BILINEAR), transform.resolution)

    path = _figure_path(context, loaded, "fast_linear")
    mask_figure([(seen(i), eval_masks[i], result.predictions[i]) for i in keep], path)
    extra = {"protocol": "BNHead on cached patch tokens, no augmentation, logits upsampled to the encoder's crop", "epochs": result.epochs,
             "steps": result.steps, "warmup_steps": result.warmup_steps, "blocks": options.blocks, "grid": list(grid), "patch": list(patch)}
    label = majority_pixel_class(train_masks, len(classes))
    trivial = (label, constant_areas(eval_masks, label, len(classes)))
    return _seg_rows(context, loaded, common, "fast_linear", result.metrics, result.areas, trivial, str(path.relative_to(context.run_dir)), extra)


def _mmseg_rows(context, loaded, options, common, classes, train_split, eval_split, train_masks) -> list[ResultRow]:
    from probes.mmseg_linear import SegFolder, run_mmseg_linear

    native = train_split.seg_folder()
    if native is not None:
        folder = SegFolder(native, classes, img_suffix=".jpg", ade20k=True)
        stems = sorted(Path(eval_split.item_id(i)).stem for i in range(len(eval_split)))[:FIGURE_IMAGES]
        index_of = {Path(eval_split.item_id(i)).stem: i for i in range(len(eval_split))}
    else:
        folder = SegFolder(export_seg_folder(train_split, eval_split, context.cache_dir), classes, img_suffix=".png", ade20k=False)
        stems = [item_stem(i) for i in range(min(FIGURE_IMAGES, len(eval_split)))]
        index_of = {item_stem(i): i for i in range(len(eval_split))}
    config = MMSegConfig(iters=options.iters, lr=options.mmseg_lr, blocks=options.blocks, seed=context.seed, workers=context.extraction.workers)
    work_dir = context.run_dir / "mmseg" / loaded.name
    context.log(f"mmseg linear head for {loaded.name}: {config.iters} iterations at lr {config.lr:g} on {folder.root}")
    result = run_mmseg_linear(loaded.encoder, folder, work_dir, config, keep=stems, device=context.extraction.device)
    path = _figure_path(context, loaded, "mmseg_linear")
    mask_figure([(eval_split.load_image(index_of[s]), eval_split.seg_mask(index_of[s]), result.predictions[s]) for s in stems], path)
    extra = {"protocol": "mmsegmentation BNHead, frozen backbone, random resize/crop/flip/photometric, sliding window", "iters": config.iters, "lr": result.peak_lr,
             "warmup_iters": result.warmup, "crop": config.crop or loaded.encoder.preprocess.resolution, "blocks": options.blocks,
             "head_checkpoint": str(Path(result.head_checkpoint).relative_to(context.run_dir)), "item_order": "file names, sorted"}
    label = majority_pixel_class(train_masks, len(classes))
    trivial = (label, constant_areas((eval_split.seg_mask(index_of[Path(p).stem]) for p in result.paths), label, len(classes)))
    return _seg_rows(context, loaded, common, "mmseg_linear", result.metrics, result.areas, trivial, str(path.relative_to(context.run_dir)), extra)
