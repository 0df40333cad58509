"""Suite ``grad``: where the SFT and DPO losses send gradient in the image (docs/protocol.md section 3).

Per encoder with an MLLM (manifest field ``mllm``; ``train.mllm.load_mllm``): on up to
``--grad-items`` preference items of the eval split (one per image, images spread evenly; an image's
items about one object, those with a region, are preferred, and their question kinds rotate), the SFT
and the DPO loss of that MLLM are back-propagated separately (``probes.gradients``; DPO's reference is
the MLLM of the encoder's base when the run has one, i.e. the Stage-1 model of a lineage, else the
policy itself) and each per-token gradient map is scored at the projector output and at the encoder
output (tasks ``projector_output`` / ``encoder_output``):

- its concentration, which needs no region: normalised entropy and Gini;
- its mass inside the item's region (``inside_mass``): the object's mask inside its box, the box when
  the dataset has no mask (``regions.item_region``), on the items that have a region. When no item has
  one (preference data such as MMPR's, which names no region), the inside-mass rows are skipped rows
  saying so, and the gallery figure goes with the entropy rows.

Rows: each loss's mean score with a bootstrap CI and per-item scores, ``dpo_minus_sft_*`` with a
paired bootstrap CI over the same items and the per-item differences, and each loss's count of all-zero maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.results import STATUS_SKIPPED, ResultRow
from common.options import option
from evidence.baselines import mean_check
from evidence.stats import bootstrap_ci, paired_bootstrap
from imagesets import PREFERENCES
from probes.gradients import LOSSES, SITES, Objectives, gradient_maps, map_scores, patch_cover
from probes.threads import threads_for

from .base import LoadedEncoder, RunContext
from .regions import item_region, spread_indices, to_encoder_frame
from .spec import DataNeeds, needs_an_mllm, register_suite

EVAL_SPLIT = "val"
BETA = 0.1
MAX_BATCH = 16
FIGURE_ITEMS = 4
# Scores and the direction the study's claim calls better (DPO concentrates gradient on the object).
SCORES = {"inside": True, "entropy": False, "gini": True}  # MapScores fields; rows call "inside" inside_mass


@dataclass(frozen=True)
class GradOptions:
    """Options of the ``grad`` suite (flags ``--grad-...``)."""

    items: int = option(64, "preference items to back-propagate, one per image, images spread evenly; an image's items about one object (with a region) first (0 = all)", minimum=0)


def preference_items(split, limit: int) -> list[tuple[int, object, np.ndarray | None]]:
    """(image index, preference item, its region (H, W) bool or None): one item per image (images spread
    evenly). Among an image's items, those with a region (a box, and the mask inside it) are the
    candidates when there are any, else all of them; the k-th image takes the (k mod count)-th
    candidate, so the question kinds (colour, presence, position) rotate."""
    found = []
    for position, index in enumerate(spread_indices(len(split), limit)):
        items = split.vqa_items(index)
        candidates = [item for item in items if item.box is not None] or items
        if not candidates:
            continue
        item = candidates[position % len(candidates)]
        found.append((index, item, item_region(split, index, item)))
    return found


def _load(path: str, device: str, cache: dict):
    from train.mllm import load_mllm

    if path not in cache:
        cache[path] = load_mllm(path, device=device)
    return cache[path]


def _objectives() -> Objectives:
    """The losses exactly as Stage-2 training defines them."""
    from train.losses import dpo_loss, sft_loss

    return Objectives(sft_loss, dpo_loss)


def _frame(region: np.ndarray | None, preprocess) -> torch.Tensor:
    """The region in the encoder's input frame; all False for an item without one."""
    if region is None:
        return torch.zeros((preprocess.resolution, preprocess.resolution), dtype=torch.bool)
    return to_encoder_frame(region, preprocess)


def _maps_for(context: RunContext, mllm, reference, split, items) -> tuple[dict, torch.Tensor]:
    """Gradient maps (n, h, w) per (loss, site) and the object's token cover (n, h, w)."""
    from tqdm import tqdm

    transform = mllm.image_transform()
    device = mllm.device
    maps: dict[tuple[str, str], list[torch.Tensor]] = {}
    covers = []
    batch = max(1, min(context.extraction.batch_size, MAX_BATCH))
    for start in tqdm(range(0, len(items), batch), desc="gradient maps", disable=not context.extraction.progress, leave=False):
        part = items[start : start + batch]
        images = torch.stack([transform(split.load_image(index)) for index, _, _ in part]).to(device)
        result = gradient_maps(mllm, images, [i.question for _, i, _ in part], [i.chosen for _, i, _ in part], [i.rejected for _, i, _ in part],
                               objectives=_objectives(), reference=reference, beta=BETA, item_ids=[f"{split.item_id(index)} ({item.question!r})" for index, item, _ in part])
        for key, value in result.maps.items():
            maps.setdefault(key, []).append(value)
        covers.append(patch_cover(torch.stack([_frame(region, mllm.preprocess) for _, _, region in part]), mllm.grid))
    return {key: torch.cat(values) for key, values in maps.items()}, torch.cat(covers)


def _figure(path: Path, mllm, split, items, maps: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    preprocess = mllm.preprocess
    geometry = preprocess.geometry("bilinear")
    fig, axes = plt.subplots(len(items), 3, figsize=(5.2, 1.8 * len(items)), squeeze=False)
    for row, (index, item, region) in enumerate(items):
        image = np.asarray(geometry(split.load_image(index)))
        frame = _frame(region, preprocess).numpy()
        for col, loss in enumerate(("", "sft", "dpo")):
            ax = axes[row][col]
            ax.imshow(image)
            if loss:
                heat = maps[(loss, "projector")][row].numpy()
                if heat.max() > 0:
                    ax.imshow(heat / heat.max(), cmap="jet", alpha=0.55, vmin=0, vmax=1, extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5), interpolation="nearest")
                else:
                    ax.text(0.5, 0.5, "zero gradient", transform=ax.transAxes, ha="center", fontsize=7, color="white")
            if frame.any():
                ax.contour(frame, levels=[0.5], colors="white", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                first = "input + object" if any(region is not None for _, _, region in items) else "input"
                ax.set_title({"": first, "sft": "SFT |grad|", "dpo": "DPO |grad|"}[loss], fontsize=7)
        axes[row][0].set_ylabel(f"{item.question}\n{item.chosen} / {item.rejected}", fontsize=5)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _rows_for(context: RunContext, loaded: LoadedEncoder, maps: dict, cover: torch.Tensor, has_region: np.ndarray, common: dict, extra: dict, figure: str) -> list[ResultRow]:
    """Rows of one encoder; ``has_region`` (n,) bool marks the items whose inside mass is defined."""
    rows = []
    shown_with = "inside_mass" if has_region.any() else "entropy"  # the gallery figure goes with an ok row
    share = cover.double().flatten(1).mean(1).numpy()  # the object's share of the tokens: a uniform map's inside mass
    for site in SITES:
        task = f"{site}_output"
        scores = {loss: map_scores(maps[(loss, site)], cover) for loss in LOSSES}
        for loss in LOSSES:
            zero = scores[loss].zero
            rows.append(context.row(loaded, **common, task=task, metric=f"{loss}_zero_gradients", value=float(zero.sum()), higher_is_better=False, n=len(zero), extra=extra))
        for field, higher in SCORES.items():
            values = {loss: getattr(scores[loss], field) for loss in LOSSES}
            name = "inside_mass" if field == "inside" else field
            field_extra = extra
            if field == "inside":
                if not has_region.any():
                    reason = (f"no preference item of {context.data} has a region (a box or a mask), so there is no inside mass; "
                              "the concentration rows (entropy, gini) need none")
                    rows.extend(context.row(loaded, **common, task=task, metric=metric, value=None, status=STATUS_SKIPPED, reason=reason, extra=extra)
                                for metric in (f"{loss}_{name}" for loss in (*LOSSES, "dpo_minus_sft")))
                    continue
                if not has_region.all():
                    values = {loss: np.where(has_region, value, np.nan) for loss, value in values.items()}
                    field_extra = {**extra, "items_without_region": int((~has_region).sum())}
            flat_maps = []  # losses whose maps are not above the object's share (inside mass only)
            for loss in LOSSES:
                finite = values[loss][np.isfinite(values[loss])]
                row_extra = {**field_extra, "figure": figure} if (site, name) == ("projector", shown_with) and figure else field_extra
                if not finite.size:
                    rows.append(context.row(loaded, **common, task=task, metric=f"{loss}_{name}", value=None, status=STATUS_SKIPPED, reason="every gradient map is zero", extra=row_extra))
                    continue
                complete = finite.size == values[loss].size  # per-item files only when every item has a score
                per_item = context.save_per_item(finite, loaded.name, "grad", site, loss, name) if complete else ""
                low, high = bootstrap_ci(finite, seed=context.seed)
                baseline = mean_check(finite, share[np.isfinite(values[loss])], seed=context.seed).extra() if field == "inside" else {}
                if baseline.get("degenerate"):
                    flat_maps.append(loss)
                rows.append(context.row(loaded, **common, task=task, metric=f"{loss}_{name}", value=float(finite.mean()), ci_low=low, ci_high=high, n=int(finite.size),
                                        higher_is_better=higher, per_item=per_item, extra={**row_extra, **baseline, "items_without_score": int(values[loss].size - finite.size)}))
            both = np.isfinite(values["sft"]) & np.isfinite(values["dpo"])
            if both.sum() >= 2:
                diff = paired_bootstrap(values["sft"][both], values["dpo"][both], seed=context.seed)
                # Per-item differences let the report compare encoders, and arms of replicates, item by item.
                per_item = context.save_per_item(values["dpo"] - values["sft"], loaded.name, "grad", site, "dpo_minus_sft", name) if both.all() else ""
                marks = {"degenerate": f"the {' and '.join(flat_maps).upper()} maps are not above the object's share of the image: the MLLM does not look at the object, so the difference measures nothing"} if flat_maps else {}
                rows.append(context.row(loaded, **common, task=task, metric=f"dpo_minus_sft_{name}", value=diff.delta, ci_low=diff.ci_low, ci_high=diff.ci_high, n=diff.n,
                                        higher_is_better=higher, per_item=per_item, extra={**field_extra, "p_value": diff.p_value, **marks}))
    return rows


@register_suite(
    "grad", options=GradOptions, needs=DataNeeds(all_of=(PREFERENCES,), splits=(EVAL_SPLIT,), decoded=False), encoder_check=needs_an_mllm,
    headline=(("projector_output", "dpo_minus_sft_inside_mass"), ("projector_output", "dpo_inside_mass"), ("projector_output", "dpo_minus_sft_gini")),
    control_headline=(("projector_output", "sft_inside_mass"), ("projector_output", "sft_gini")),
    flag_prefix="grad", order=40, summary="where the SFT and DPO losses send gradient in the image",
)
def gradient_suite(context: RunContext, encoders: list[LoadedEncoder]) -> list[ResultRow]:
    split = context.open_split(EVAL_SPLIT)
    common = {"suite": "grad", "dataset": context.data, "dataset_fingerprint": split.fingerprint}
    with_mllm = [loaded for loaded in encoders if loaded.spec.mllm]
    rows = [context.skipped(loaded, "no MLLM for this encoder: give it an mllm directory in the manifest (train.mllm.save_mllm writes one)", **common)
            for loaded in encoders if not loaded.spec.mllm]
    if not with_mllm:
        return rows
    items = preference_items(split, context.options.items)
    if not items:
        reason = f"{context.data} has no preference items (question, chosen, rejected) in its {EVAL_SPLIT} split"
        return rows + [context.skipped(loaded, reason, **common) for loaded in with_mllm]
    has_region = np.array([region is not None for _, _, region in items])
    notes = list(split.notes)  # what the dataset skipped when it opened (counted and named)
    by_name = {loaded.name: loaded for loaded in encoders}
    cache: dict = {}
    for loaded in with_mllm:
        mllm = _load(loaded.spec.mllm, context.extraction.device, cache)
        base = by_name.get(loaded.spec.base)
        reference_path = base.spec.mllm if base is not None and base.spec.mllm and base.spec.mllm != loaded.spec.mllm else ""
        reference = _load(reference_path, context.extraction.device, cache) if reference_path else None
        with threads_for(mllm, *([reference] if reference is not None else []), device=context.extraction.device):
            maps, cover = _maps_for(context, mllm, reference, split, items)
        figure = Path("figures") / "grad" / f"{loaded.name}.png"
        shown = min(FIGURE_ITEMS, len(items))
        _figure(context.run_dir / figure, mllm, split, items[:shown], {k: v[:shown] for k, v in maps.items()}, f"{loaded.name}: |d loss / d visual token| (projector output)")
        kinds = {}
        for _, item, _ in items:
            kinds[item.kind] = kinds.get(item.kind, 0) + 1
        extra = {"mllm": loaded.spec.mllm, "reference": reference_path or "the policy itself", "beta": BETA, "visual_layer": mllm.visual_layer,
                 "grid": list(mllm.grid), "item_kinds": kinds, "split": EVAL_SPLIT, "norm": "L1 over channels",
                 "mllm_encoder_matches": mllm.encoder.weights_hash == loaded.encoder.weights_hash, **({"data_notes": notes} if notes else {})}
        rows.extend(_rows_for(context, loaded, maps, cover, has_region, common, extra, str(figure)))
    return rows
