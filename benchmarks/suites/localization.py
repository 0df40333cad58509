"""Suite ``loc``: where the encoder looks, scored (PROTOCOL.md section 4).

Per encoder: a linear head on the pooled (``cls``) features of train (the hyperparameters the ``cls``
suite selected in this run, else chosen afresh by the same grid on train's held-out part), Grad-CAM
(``probes.gradcam``) of each evaluated image's true-class logit at the input of each block in
``options["loc_layers"]`` (default the last and the penultimate), scored against the object of that
class: pointing game, energy-based pointing game and IoU of the map's top-k% with the mask, in percent,
with 95% bootstrap CIs and per-item scores. Rows of the last block carry no ``layer`` (as in ``cls``);
the others carry ``extra["layer"]``. A figure of the first few images' maps goes to the gallery.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.datasets import open_split
from benchmarks.features import extract_features
from benchmarks.results import STATUS_SKIPPED, ResultRow
from probes.gradcam import grad_cam, has_blocks, localization_scores, resolve_block
from probes.linear import LinearProbeConfig, fit_linear_head, linear_probe
from evidence.stats import bootstrap_ci
from probes.threads import threads_for

from . import SUITES
from .base import LoadedEncoder, RunContext
from .regions import class_region, has_regions, spread_indices, to_encoder_frame

TRAIN_SPLIT, EVAL_SPLIT = "train", "val"
DEFAULT_ITEMS = 500
DEFAULT_LAYERS = (-1, -2)
DEFAULT_TOPK = 0.15
DEFAULT_FIGURE_IMAGES = 4


def _parse_layers(value) -> list[int]:
    if value in (None, ""):
        return list(DEFAULT_LAYERS)
    if isinstance(value, str):
        try:
            return [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"--loc-layers takes a comma list of block indices such as -1,-2; got {value!r}") from None
    return [int(v) for v in value]


def _selected_hyperparameters(context: RunContext, encoder_name: str) -> dict | None:
    """lr / weight decay the cls suite's SGD grid (task ``linear_sgd``; ``linear`` in older runs) selected for
    this encoder's pooled features in this run. The exact logistic regression (task ``linear``) has no
    learning rate to reuse, so a run with only that selects the head's settings here."""
    path = context.run_dir / "results.jsonl"
    if not path.exists():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        extra = row.get("extra", {})
        if (row.get("suite"), row.get("task"), row.get("encoder"), row.get("status")) in {("cls", task, encoder_name, "ok") for task in ("linear_sgd", "linear")} \
                and extra.get("pooling") == "cls" and "layer" not in extra and "lr" in extra.get("selected", {}):
            return {"lr": float(extra["selected"]["lr"]), "weight_decay": float(extra["selected"]["weight_decay"])}
    return None


def linear_head(context: RunContext, loaded: LoadedEncoder, train_split, eval_split) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], dict]:
    """(weight, bias, classes) of a linear head on the pooled features, and where its settings came from."""
    config = LinearProbeConfig(epochs=int(context.options.get("linear_epochs", 10)), seed=context.seed)
    train = extract_features(loaded.encoder, train_split, context.cache_dir, layers=context.layers, config=context.extraction, log=context.log)
    chosen = _selected_hyperparameters(context, loaded.name)
    source = "cls suite selection (this run)"
    if chosen is None:
        evaluation = extract_features(loaded.encoder, eval_split, context.cache_dir, layers=context.layers, config=context.extraction, log=context.log)
        result = linear_probe(train.tensor("cls"), train.valid_labels(), evaluation.tensor("cls"), evaluation.valid_labels(), config=config, device=context.extraction.device)
        chosen = {"lr": float(result.selected["lr"]), "weight_decay": float(result.selected["weight_decay"])}
        source = "selected here on train's held-out part (no cls rows in this run)"
    head = fit_linear_head(train.tensor("cls"), train.valid_labels(), lr=chosen["lr"], weight_decay=chosen["weight_decay"], config=config, device=context.extraction.device)
    return head, {"source": source, **chosen, "feature": "cls"}


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
    return indices, torch.stack(images), torch.stack(boxes), torch.stack(masks)


def encoder_maps(context: RunContext, loaded: LoadedEncoder, split, indices: list[int], images: torch.Tensor, layers: list[int], head) -> dict[int, torch.Tensor]:
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
        maps = grad_cam(encoder, images[start : start + batch].to(device, torch.float32), targets, layers, lambda pooled: pooled @ weight + bias,
                        item_ids=[split.item_id(i) for i in part])
        for index, value in maps.items():
            chunks.setdefault(index, []).append(value.cpu())
    return {index: torch.cat(values) for index, values in chunks.items()}


def write_figure(path: Path, split, indices: list[int], preprocess, maps: dict[int, torch.Tensor], boxes: torch.Tensor, title: str) -> None:
    """PNG: one row per image (the encoder's input with the object's box, then each block's map)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from torchvision import transforms as T

    from probes.gradcam import upsample

    geometry = T.Compose([T.Resize(round(preprocess.resolution / preprocess.crop_pct)), T.CenterCrop(preprocess.resolution)])
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


@SUITES.register("loc")
def localization_suite(context: RunContext, encoders: list[LoadedEncoder]) -> list[ResultRow]:
    eval_split = open_split(context.data, EVAL_SPLIT)
    common = {"suite": "loc", "task": "gradcam", "dataset": context.data, "dataset_fingerprint": eval_split.fingerprint}
    reason = has_regions(eval_split)
    if reason:
        context.log(f"suite loc: skipped ({reason})")
        return [context.row(loaded, **common, metric="-", value=None, status=STATUS_SKIPPED, reason=reason) for loaded in encoders]
    train_split = open_split(context.data, TRAIN_SPLIT)
    layers = _parse_layers(context.options.get("loc_layers"))
    topk = float(context.options.get("loc_topk", DEFAULT_TOPK))
    limit = int(context.options.get("loc_items", DEFAULT_ITEMS))
    n_figure = int(context.options.get("loc_figure_images", DEFAULT_FIGURE_IMAGES))
    rows: list[ResultRow] = []
    regions_by_resolution: dict = {}
    for loaded in encoders:
        encoder = loaded.encoder
        if not has_blocks(encoder):
            reason = f"{encoder.name} ({encoder.arch}) exposes no transformer blocks to explain (an MLLM's projector outputs?); run loc with --features encoder"
            rows.append(context.row(loaded, **common, metric="-", value=None, status=STATUS_SKIPPED, reason=reason))
            continue
        blocks = sorted({resolve_block(encoder, layer) for layer in layers})  # a bad index fails before any work
        key = encoder.preprocess.cache_key()
        if key not in regions_by_resolution:
            regions_by_resolution[key] = _items(eval_split, limit, encoder.preprocess)
        indices, images, boxes, masks = regions_by_resolution[key]
        head, head_info = linear_head(context, loaded, train_split, eval_split)
        with threads_for(encoder, device=context.extraction.device):
            maps = encoder_maps(context, loaded, eval_split, indices, images, blocks, head)
        figure = Path("figures") / "loc" / f"{encoder.name}.png"
        shown = min(n_figure, len(indices))
        if shown:
            write_figure(context.run_dir / figure, eval_split, indices[:shown], encoder.preprocess, {b: m[:shown] for b, m in maps.items()}, boxes[:shown],
                         f"{encoder.name}: Grad-CAM of the true-class logit (block input)")
        for block in blocks:
            scores = localization_scores(maps[block], boxes, masks, topk=topk)
            extra = {"block": block, "head": head_info, "topk": topk, "split": EVAL_SPLIT, "figure": str(figure) if shown else "",
                     "zero_maps": int(scores.zero.sum()), "map_grid": list(maps[block].shape[1:])}
            if block != encoder.num_layers - 1:
                extra["layer"] = block
            for metric, values in (("pointing_game", scores.pointing), ("energy_pointing_game", scores.energy), (f"iou_top{round(topk * 100)}", scores.iou)):
                per_item = context.save_per_item(values, loaded.name, "loc", metric, f"block{block}")
                low, high = bootstrap_ci(values, seed=context.seed, scale=100.0)
                rows.append(context.row(loaded, **common, metric=metric, value=float(values.mean() * 100.0), ci_low=low, ci_high=high, n=len(values), per_item=per_item, extra=extra))
            rows.append(context.row(loaded, **common, metric="zero_maps", value=float(scores.zero.sum()), higher_is_better=False, n=len(values), extra={k: v for k, v in extra.items() if k != "figure"}))
    return rows
