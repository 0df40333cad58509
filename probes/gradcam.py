"""Grad-CAM on a vision encoder's blocks, and localization scores against boxes and masks
(docs/protocol.md section 4).

The maps come from captum's ``LayerGradCam``. Which tensor of block i is explained (``target``):

- ``"block_input"`` (default): the tokens block i reads, i.e. the residual stream entering it (the
  output of block i - 1; pytorch-grad-cam gives the same map with ``target_layers=[blocks[i - 1]]``).
  The default because it is the representation the suites' per-block features (``L{i}``) describe and
  it exists for every family, ConvNet stages included.
- ``"norm1"``: the output of block i's first LayerNorm (timm ``norm1``, transformers ``layer_norm1``,
  open_clip / torchvision ``ln_1``), the tensor pytorch-grad-cam's ViT recipe explains
  (``target_layers=[model.blocks[-1].norm1]``). It feeds only the block's attention branch, so its map
  differs from the block input's.

Either way the last block's *output* patch tokens are never explained: they never reach a CLS-pooled
output, so their gradient is exactly zero. Tokens are (B, P + N, D) and captum would take the token
axis for channels; so a hook splits off the P prefix tokens by count (``Encoder.num_prefix_tokens``:
CLS, registers, none for SigLIP), reshapes the N patch tokens to the encoder's own grid (B, D, h, w)
and passes them through an identity module that captum attributes to; the values are unchanged.
Grad-CAM: per image, channel weights = spatial mean of d(target logit)/d(activation); map =
ReLU(sum over channels of weight * activation), shape (h, w). Images of a batch are independent (a ViT
in eval mode mixes nothing across the batch), so one backward pass gives the maps of the whole batch.

Scores (:func:`localization_scores`), computed on the map bilinearly upsampled to the region's size
(H, W), with rules that do not depend on the order of tied pixels:

- pointing game: 1 when the map's maximum lies inside the object's box; where several pixels tie at
  the maximum (an upsampled peak token gives a 2x2 plateau at even scale factors), 1 when any of them
  does;
- energy-based pointing game: the map's mass inside the box / its total mass;
- top-k% IoU: the IoU of the map's top region with the object's mask (:func:`top_region`): every pixel
  whose value is >= the value at rank k = max(1, round(topk * H * W)) *and* > 0. Ties at the cut-off
  are all in, so the region can exceed k% (a constant positive map keeps every pixel); zero pixels
  (clipped by Grad-CAM's ReLU) are never in, so a sparse map keeps only its positive pixels and the
  region can be smaller than k%, and an all-zero map has an empty region. The region's actual share of
  the pixels is reported per item (``region_share``).

An all-zero map (every Grad-CAM value clipped by the ReLU) scores 0 on all three and is counted.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders import Encoder


class AttributionError(RuntimeError):
    """Maps that cannot be used (NaN/Inf) or a block that does not exist; names encoder, layer and image."""


# Where the families keep their transformer blocks (timm, transformers, open_clip, torchvision).
_BLOCK_PATHS = ("blocks", "vision_model.encoder.layers", "encoder.layers", "transformer.resblocks", "stages", "layers")


def block_modules(encoder: Encoder) -> list[nn.Module]:
    """The encoder's ``num_layers`` blocks in order (the modules ``Encoder.features(layers=...)`` indexes)."""
    for path in _BLOCK_PATHS:
        module: object = encoder.model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) == encoder.num_layers:
            return list(module)
    raise AttributionError(
        f"{encoder.name}: cannot find its {encoder.num_layers} blocks (looked for {', '.join(_BLOCK_PATHS)} on "
        f"{type(encoder.model).__name__}); Grad-CAM needs a block list"
    )


def has_blocks(encoder: Encoder) -> bool:
    """Whether Grad-CAM can find the encoder's blocks (not so for e.g. an MLLM's projector outputs)."""
    try:
        block_modules(encoder)
    except AttributionError:
        return False
    return True


def resolve_block(encoder: Encoder, layer: int) -> int:
    """Non-negative block index of ``layer`` (-1 = last); the error lists the valid range."""
    n = encoder.num_layers
    index = layer + n if layer < 0 else layer
    if not 0 <= index < n:
        raise AttributionError(f"{encoder.name}: block {layer} does not exist; the encoder has {n} blocks, valid indices are {-n}..{n - 1}")
    return index


def encoder_grid(encoder: Encoder, images: Tensor) -> tuple[int, int]:
    """The patch grid (h, w) the encoder itself reports for images of this size."""
    with torch.no_grad():
        return tuple(encoder.features(images[:1]).grid)  # type: ignore[return-value]


class _GridView(nn.Module):
    """Identity on the (B, D, h, w) patch grid: the module captum hooks."""

    def forward(self, grid: Tensor) -> Tensor:
        return grid


def _through_view(tokens: Tensor, view: _GridView, prefix: int, grid: tuple[int, int]) -> Tensor:
    """``tokens`` with their patch part routed through ``view`` as a (B, D, h, w) grid (values unchanged)."""
    if tokens.ndim == 4:  # a ConvNet stage: already (B, C, H, W)
        return view(tokens)
    h, w = grid
    batch, count, dim = tokens.shape
    if count - prefix != h * w:
        raise AttributionError(f"block input has {count} tokens; expected {prefix} prefix + {h}x{w} patch tokens")
    patches = tokens[:, prefix:].transpose(1, 2).reshape(batch, dim, h, w)
    return torch.cat([tokens[:, :prefix], view(patches).reshape(batch, dim, h * w).transpose(1, 2)], dim=1)


TARGETS = ("block_input", "norm1")
TOPK = 0.15  # the share of a map's highest pixels scored against the mask (IoU), unless the caller chooses
# A pre-norm transformer block's first LayerNorm, by family: timm, transformers, open_clip / torchvision.
_NORM1_NAMES = ("norm1", "layer_norm1", "ln_1")


def norm1_module(block: nn.Module) -> nn.Module:
    """The first LayerNorm of a pre-norm transformer ``block`` (the tensor pytorch-grad-cam's ViT recipe explains)."""
    for name in _NORM1_NAMES:
        module = getattr(block, name, None)
        if isinstance(module, nn.Module):
            return module
    raise AttributionError(
        f"{type(block).__name__} has no first LayerNorm (looked for {', '.join(_NORM1_NAMES)}); "
        "Grad-CAM target 'norm1' needs a pre-norm transformer block, use target 'block_input'"
    )


@contextlib.contextmanager
def _grid_hook(block: nn.Module, view: _GridView, prefix: int, grid: tuple[int, int], target: str = "block_input") -> Iterator[None]:
    """While active, the tensor ``target`` of ``block`` (its input, or its norm1 output) flows through
    ``view`` as a (B, D, h, w) grid."""
    if target == "norm1":

        def after_norm(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
            return _through_view(output, view, prefix, grid)

        handle = norm1_module(block).register_forward_hook(after_norm)
    else:

        def before_block(module: nn.Module, args: tuple, kwargs: dict):
            if args:
                return (_through_view(args[0], view, prefix, grid), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": _through_view(kwargs["hidden_states"], view, prefix, grid)}

        handle = block.register_forward_pre_hook(before_block, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def grad_cam(
    encoder: Encoder,
    images: Tensor,
    targets: Tensor,
    layers: Sequence[int],
    score: Callable[[Tensor], Tensor],
    *,
    item_ids: Sequence[str] | None = None,
    target: str = "block_input",
) -> dict[int, Tensor]:
    """Grad-CAM maps (B, h, w), float32, >= 0, of ``images`` (B, 3, R, R) for each block in ``layers``
    (keys: non-negative block indices), explaining the block's ``target`` tensor: ``"block_input"``
    (default; the residual stream the block reads) or ``"norm1"`` (its first LayerNorm's output,
    pytorch-grad-cam's ViT recipe); see the module docstring.

    ``score`` maps the encoder's pooled output (B, D) to logits (B, C); ``targets`` (B,) are the logit
    columns to explain. Raises :class:`AttributionError` for a block that does not exist, a block
    without a first LayerNorm under ``"norm1"``, and for non-finite maps (naming the encoder, the block
    and the image, from ``item_ids`` when given).
    """
    from captum.attr import LayerGradCam

    if target not in TARGETS:
        raise ValueError(f"Grad-CAM target must be one of {', '.join(TARGETS)}; got {target!r}")
    indices = [resolve_block(encoder, layer) for layer in layers]
    blocks = block_modules(encoder)
    if target == "norm1":
        for index in indices:  # before any work
            try:
                norm1_module(blocks[index])
            except AttributionError as err:
                raise AttributionError(f"{encoder.name}: block {index}: {err}") from None
    grid = encoder_grid(encoder, images)
    was_training = encoder.training
    encoder.eval()
    maps: dict[int, Tensor] = {}
    try:
        for index in indices:
            view = _GridView()
            with _grid_hook(blocks[index], view, encoder.num_prefix_tokens, grid, target):
                cam = LayerGradCam(lambda x: score(encoder.features(x).pooled), view)
                attribution = cam.attribute(images, target=targets, relu_attributions=True)
            result = attribution.detach()[:, 0].float()
            bad = ~torch.isfinite(result).flatten(1).all(dim=1)
            if bad.any():
                first = int(bad.nonzero()[0])
                which = item_ids[first] if item_ids is not None else f"batch position {first}"
                raise AttributionError(
                    f"{encoder.name}: Grad-CAM map of block {index} is NaN/Inf for image {which} ({int(bad.sum())} of {len(bad)} in the batch); "
                    "check the checkpoint (inf/NaN weights or activations) or run at fp32"
                )
            maps[index] = result
    finally:
        encoder.train(was_training)
    return maps


# --------------------------------------------------------------------------------------------------
# Scores


@dataclass
class LocalizationScores:
    """Per-item localization scores (arrays of shape (n,)): ``pointing`` 0/1, ``energy`` in [0, 1],
    ``iou`` in [0, 1] (the map's top region, :func:`top_region`, vs the mask), ``zero`` 0/1 for all-zero
    maps, ``region_share`` the fraction of pixels (0..1) in the top region (``topk`` unless ties at the
    cut-off or zero pixels made it larger or smaller)."""

    pointing: np.ndarray
    energy: np.ndarray
    iou: np.ndarray
    zero: np.ndarray
    topk: float
    region_share: np.ndarray


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of (B, h, w) maps to ``size`` (H, W) pixels (as pytorch-grad-cam's cv2.resize)."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def top_region(values: Tensor, fraction: float) -> Tensor:
    """The top-``fraction`` region of each row of non-negative ``values`` (B, N), as (B, N) bool.

    A pixel is in when its value is >= the value at rank k = max(1, round(fraction * N)) (the k-th
    largest, which does not depend on how ties are ordered) and > 0. So every pixel tied at the cut-off
    is in (the region may exceed k pixels), no zero pixel is (a map with fewer than k positive pixels
    keeps just those; an all-zero map has an empty region), and the region is the same for any order of
    the pixels.
    """
    keep = max(1, round(fraction * values.shape[1]))
    cut = values.topk(keep, dim=1).values[:, -1:]
    return (values >= cut) & (values > 0)


def localization_scores(maps: Tensor, boxes: Tensor, masks: Tensor, *, topk: float = TOPK) -> LocalizationScores:
    """Score maps (B, h, w) against object boxes (B, H, W) bool and masks (B, H, W) bool, in the maps'
    upsampled frame (H, W). ``topk`` is the fraction of pixels kept for the IoU (:func:`top_region`:
    ties at the cut-off all in, zero pixels never). A pixel tied at the map's maximum counts for the
    pointing game wherever it is. Every score is invariant to a permutation of the pixels applied to
    map, box and mask alike."""
    if not 0.0 < topk <= 1.0:
        raise ValueError(f"topk must be a fraction in (0, 1], got {topk}")
    if boxes.shape != masks.shape or boxes.shape[0] != maps.shape[0]:
        raise ValueError(f"maps {tuple(maps.shape)}, boxes {tuple(boxes.shape)} and masks {tuple(masks.shape)} must cover the same items")
    full = upsample(maps, tuple(boxes.shape[-2:])).clamp_min(0.0).flatten(1)
    boxes, masks = boxes.flatten(1).bool(), masks.flatten(1).bool()
    total = full.sum(dim=1)
    zero = total <= 0
    at_peak = full == full.max(dim=1, keepdim=True).values
    pointing = (at_peak & boxes).any(dim=1) & ~zero
    energy = torch.where(zero, torch.zeros_like(total), (full * boxes).sum(dim=1) / total.clamp_min(1e-30))
    top = top_region(full, topk)
    union = (top | masks).sum(dim=1).clamp_min(1)
    iou = torch.where(zero, torch.zeros_like(total), (top & masks).sum(dim=1) / union)
    as_np = lambda t: t.double().cpu().numpy()
    return LocalizationScores(as_np(pointing), as_np(energy), as_np(iou), as_np(zero), topk, as_np(top.sum(dim=1).double() / top.shape[1]))
