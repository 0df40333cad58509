"""Suite ``loc``: where the encoder looks, scored (docs/protocol.md section 4).

Per encoder: a linear head on the pooled (``cls``) features of train (the learning rate and weight
decay the SGD grid of the ``cls`` suite selects on train's held-out part, shared with that suite when
both run on the same data: :func:`.classification.pooled_linear_head`), Grad-CAM (``probes.gradcam``)
of each evaluated image's true-class logit at the input of each block in ``--loc-layers`` (default the
last and the penultimate), scored against the object of that
class: pointing game, energy-based pointing game and IoU of the map's top-k% with the mask, in percent,
with 95% bootstrap CIs and per-item scores. Rows of the last block carry no ``layer`` (as in ``cls``);
the others carry ``extra["layer"]``. A figure of the first few images' maps goes to the gallery.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.features import extract_features
from benchmarks.results import ResultRow
from benchmarks.validate import blocks_problem, layers_out_of_range
from common.options import option
from evidence.baselines import mean_check
from evidence.stats import bootstrap_ci
from imagesets import BOXES, LABELS, MASKS
from probes.gradcam import TARGETS, TOPK, grad_cam, has_blocks, localization_scores, resolve_block
from probes.threads import threads_for

from .base import LoadedEncoder, RunContext
from .classification import pooled_linear_head
from .regions import class_region, spread_indices, to_encoder_frame
from .spec import DataNeeds, register_suite

TRAIN_SPLIT, EVAL_SPLIT = "train", "val"


@dataclass(frozen=True)
class LocOptions:
    """Options of the ``loc`` suite (flags ``--loc-...``)."""

    items: int = option(500, "images of the eval split to explain, spread evenly (0 = all)", minimum=0)
    layers: tuple[int, ...] = option((-1, -2), "blocks whose input Grad-CAM explains (negative = from the end)", check=blocks_problem, metavar="BLOCKS")
    topk: float = option(TOPK, "the share of the map's highest pixels whose IoU with the object's mask is scored (metric iou_topNN)", minimum=0.01, maximum=1.0)
    figure_images: int = option(4, "images shown in the gallery figure", minimum=0)
    target: str = option("block_input", "what Grad-CAM explains in each block: its input (the residual stream; default) or its first LayerNorm's output (pytorch-grad-cam's ViT recipe, target_layers=[blocks[-1].norm1])",
                         choices=TARGETS)


def _check_loaded(options: LocOptions, encoders: list[LoadedEncoder]) -> str:
    return layers_out_of_range(list(options.layers), [item for item in encoders if has_blocks(item.encoder)], "--loc-layers")


def linear_head(context: RunContext, loaded: LoadedEncoder, train_split, eval_split) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], dict]:
    """(weight, bias, classes) of the linear head whose true-class logit Grad-CAM explains, and where its
    settings came from (:func:`.classification.pooled_linear_head`, with the cls suite's options)."""
    train = extract_features(loaded.encoder, train_split, context.cache_dir, layers=context.layers, config=context.extraction, log=context.log)
    evaluation = extract_features(loaded.encoder, eval_split, context.cache_dir, layers=context.layers, config=context.extraction, log=context.log)
    return pooled_linear_head(context, loaded, train, evaluation, context.options_of("cls"))


def _items(split, limit: int, preprocess) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices with a labelled object region, their transformed images (n, 3, R, R) as float16 (every
    encoder with this preprocessing reuses them; fp16's step is far below one 8-bit grey level), and
    their (n, R, R) box and mask regions in the encoder frame."""
    transform = preprocess.transform()
    indices, images, boxes, masks = [], [], [], []
    for index in spread_indices(len(split), limit):
        label = int(split.labels[index])
        region = class_region(split, index, label) if label >= 0 else None
        if region is None:
            continue
        indices.append(index)
        images.append(transform(split.load_image(index)).half())
        boxes.append(to_encoder_frame(region[0], preprocess))
        masks.append(to_encoder_frame(region[1], preprocess))
    if not indices:
        return [], torch.empty(0), torch.empty(0), torch.empty(0)
    return indices, torch.stack(images), torch.stack(boxes), torch.stack(masks)


def uniform_map_scores(boxes: torch.Tensor, masks: torch.Tensor, topk: float) -> dict[str, np.ndarray]:
    """Per-item scores (fractions) of a map without spatial information (a constant map), the trivial
    baseline of each metric: its peak (every pixel ties) and its energy fall inside the box with the box's
    share of the image; its top region is every pixel (ties at the cut-off are in), whose IoU with a mask
    is the mask's share. ``topk`` does not enter: a constant map has no top region smaller than the image."""
    box_share = boxes.flatten(1).double().mean(1).numpy()
    mask_share = masks.flatten(1).double().mean(1).numpy()
    return {"pointing_game": box_share, "energy_pointing_game": box_share, "iou": mask_share}


def encoder_maps(context: RunContext, loaded: LoadedEncoder, split, indices: list[int], images: torch.Tensor, layers: list[int], head, target: str = "block_input") -> dict[int, torch.Tensor]:
    """Grad-CAM maps (n, h, w) per block of the true-class logit, computed a batch at a time."""
    from tqdm import tqdm

    encoder, device = loaded.encoder, context.extraction.device
    weight, bias, classes = (t.to(device) for t in head)
    lookup = {int(c): i for i, c in enumerate(classes.tolist())}
    batch = max(1, context.extraction.batch_size)
    chunks: dict[int, list[torch.Tensor]] = {}
    starts = range(0, len(indices), batch)
    for start in tqdm(starts, desc=f"grad-cam {encoder.name}", disable=not context.extraction.progress, leave=False):
        part = indices[start : start + batch]
        targets = torch.tensor([lookup[int(split.labels[i])] for i in part], device=device)
        maps = grad_cam(encoder, images[start : start + batch].to(device, torch.float32), targets, layers, lambda pooled: pooled @ weight + bias, target=target,
                        item_ids=[split.item_id(i) for i in part])
        for index, value in maps.items():
            chunks.setdefault(index, []).append(value.cpu())
    return {index: torch.cat(values) for index, values in chunks.items()}


def write_figure(path: Path, split, indices: list[int], preprocess, maps: dict[int, torch.Tensor], boxes: torch.Tensor, title: str) -> None:
    """PNG: one row per image (the encoder's input with the object's box, then each block's map)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from probes.gradcam import upsample

    geometry = preprocess.geometry("bilinear")
    blocks = sorted(maps)
    fig, axes = plt.subplots(len(indices), 1 + len(blocks), figsize=(1.6 * (1 + len(blocks)), 1.6 * len(indices)), squeeze=False)
    for row, index in enumerate(indices):
        image = np.asarray(geometry(split.load_image(index)))
        ys, xs = np.nonzero(boxes[row].numpy())
        for col in range(1 + len(blocks)):
            ax = axes[row][col]
            ax.imshow(image)
            if col:
                heat = upsample(maps[blocks[col - 1]][row : row + 1], image.shape[:2])[0].numpy()
                ax.imshow(heat / heat.max() if heat.max() > 0 else heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if len(xs):
                ax.add_patch(plt.Rectangle((xs.min() - 0.5, ys.min() - 0.5), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1, fill=False, color="white", lw=1))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("input + box" if col == 0 else f"block {blocks[col - 1]}", fontsize=7)
        axes[row][0].set_ylabel(split.item_id(index), fontsize=6)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


@register_suite(
    "loc", options=LocOptions, needs=DataNeeds(all_of=(LABELS,), any_of=(BOXES, MASKS), splits=(TRAIN_SPLIT, EVAL_SPLIT)),
    headline=(("gradcam", "pointing_game"),), variant_fields=("layer",), flag_prefix="loc", uses=("cls",),
    check_loaded=_check_loaded, order=30, summary="Grad-CAM scored against object boxes and masks",
)
def localization_suite(context: RunContext, encoders: list[LoadedEncoder]) -> list[ResultRow]:
    options: LocOptions = context.options
    eval_split = context.open_split(EVAL_SPLIT)
    common = {"suite": "loc", "task": "gradcam", "dataset": context.data, "dataset_fingerprint": eval_split.fingerprint}
    train_split = context.open_split(TRAIN_SPLIT)
    layers, topk, limit, n_figure = list(options.layers), options.topk, options.items, options.figure_images
    rows: list[ResultRow] = []
    regions_by_resolution: dict = {}
    for loaded in encoders:
        encoder = loaded.encoder
        if not has_blocks(encoder):
            reason = f"{encoder.name} ({encoder.arch}) exposes no transformer blocks to explain (an MLLM's projector outputs?); run loc with --features encoder"
            rows.append(context.skipped(loaded, reason, **common))
            continue
        blocks = sorted({resolve_block(encoder, layer) for layer in layers})  # a bad index fails before any work
        key = encoder.preprocess.cache_key()
        if key not in regions_by_resolution:
            regions_by_resolution[key] = _items(eval_split, limit, encoder.preprocess)
        indices, images, boxes, masks = regions_by_resolution[key]
        if not indices:
            rows.append(context.skipped(loaded, f"no image of {context.data} ({EVAL_SPLIT}) has a box or mask of its labelled class", **common))
            continue
        head, head_info = linear_head(context, loaded, train_split, eval_split)
        with threads_for(encoder, device=context.extraction.device):
            maps = encoder_maps(context, loaded, eval_split, indices, images, blocks, head, options.target)
        figure = Path("figures") / "loc" / f"{encoder.name}.png"
        shown = min(n_figure, len(indices))
        if shown:
            write_figure(context.run_dir / figure, eval_split, indices[:shown], encoder.preprocess, {b: m[:shown] for b, m in maps.items()}, boxes[:shown],
                         f"{encoder.name}: Grad-CAM of the true-class logit (block input)")
        trivial = uniform_map_scores(boxes, masks, topk)
        for block in blocks:
            scores = localization_scores(maps[block], boxes, masks, topk=topk)
            extra = {"block": block, "head": head_info, "topk": topk, "target": options.target, "split": EVAL_SPLIT, "figure": str(figure) if shown else "",
                     "region_share": float(scores.region_share.mean()),
                     "zero_maps": int(scores.zero.sum()), "map_grid": list(maps[block].shape[1:]),
                     "trivial": "a map without spatial information: the box's (mask's) share of the image"}
            if block != encoder.num_layers - 1:
                extra["layer"] = block
            flat = maps[block].flatten(1)
            constant = "its maps are uniform: no spatial information" if bool((flat.amax(1) == flat.amin(1)).all()) else ""
            for metric, values in (("pointing_game", scores.pointing), ("energy_pointing_game", scores.energy), (f"iou_top{round(topk * 100)}", scores.iou)):
                per_item = context.save_per_item(values, loaded.name, "loc", metric, f"block{block}")
                low, high = bootstrap_ci(values, seed=context.seed, scale=100.0)
                check = mean_check(values, trivial[metric.split("_top")[0]], scale=100.0, constant=constant, seed=context.seed)
                rows.append(context.row(loaded, **common, metric=metric, value=float(values.mean() * 100.0), ci_low=low, ci_high=high, n=len(values), per_item=per_item,
                                        extra={**extra, **check.extra()}))
            rows.append(context.row(loaded, **common, metric="zero_maps", value=float(scores.zero.sum()), higher_is_better=False, n=len(values), extra={k: v for k, v in extra.items() if k != "figure"}))
    return rows
