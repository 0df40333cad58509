"""Grad-CAM on a vision encoder's blocks, and localization scores against boxes and masks
(docs/protocol.md section 4).

The maps come from captum's ``LayerGradCam``. Grad-CAM "at block i" explains the tokens block i
reads (its input, the output of block i - 1), as pytorch-grad-cam's ViT recipe does (target layer
``blocks[-1].norm1``): the last block's *output* patch tokens never reach a CLS-pooled output, so their
gradient is exactly zero. Tokens are (B, P + N, D) and captum would take the token axis for channels;
so a forward pre-hook on the block splits off the P prefix tokens by count
(``Encoder.num_prefix_tokens``: CLS, registers, none for SigLIP), reshapes the N patch tokens to the
encoder's own grid (B, D, h, w) and passes them through an identity module that captum attributes to;
the block's input values are unchanged. Grad-CAM: per image, channel weights = spatial mean of
d(target logit)/d(activation); map = ReLU(sum over channels of weight * activation), shape (h, w).
Images of a batch are independent (a ViT in eval mode mixes nothing across the batch), so one
backward pass gives the maps of the whole batch.

Scores (:func:`localization_scores`), computed on the map bilinearly upsampled to the region's size:
pointing game (1 when the map's maximum lies inside the object's box), energy-based pointing game (the
map's mass inside the box / its total mass), and the IoU of the map's top-k% pixels with the object's
mask. An all-zero map (every Grad-CAM value clipped by the ReLU) scores 0 on all three and is counted.
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


@contextlib.contextmanager
def _grid_hook(block: nn.Module, view: _GridView, prefix: int, grid: tuple[int, int]) -> Iterator[None]:
    """While active, the tokens ``block`` reads flow through ``view`` as a (B, D, h, w) grid."""

    def hook(module: nn.Module, args: tuple, kwargs: dict):
        if args:
            return (_through_view(args[0], view, prefix, grid), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": _through_view(kwargs["hidden_states"], view, prefix, grid)}

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class LinearHead:
    """A linear classifier on raw pooled features: ``logits = x @ weight + bias``; column c is class
    ``classes[c]`` (dataset class id)."""

    weight: Tensor  # (D, C)
    bias: Tensor  # (C,)
    classes: Tensor  # (C,) int64

    def columns(self, labels: Tensor) -> Tensor:
        """Logit columns of dataset class ids ``labels``."""
        lookup = {int(c): i for i, c in enumerate(self.classes.tolist())}
        return torch.tensor([lookup[int(label)] for label in labels.tolist()], dtype=torch.long)


def grad_cam(
    encoder: Encoder,
    images: Tensor,
    targets: Tensor,
    layers: Sequence[int],
    score: Callable[[Tensor], Tensor],
    *,
    item_ids: Sequence[str] | None = None,
) -> dict[int, Tensor]:
    """Grad-CAM maps (B, h, w), float32, >= 0, of ``images`` (B, 3, R, R) at the input of each block in
    ``layers`` (keys: non-negative block indices).

    ``score`` maps the encoder's pooled output (B, D) to logits (B, C); ``targets`` (B,) are the logit
    columns to explain. Raises :class:`AttributionError` for a block that does not exist and for
    non-finite maps (naming the encoder, the block and the image, from ``item_ids`` when given).
    """
    from captum.attr import LayerGradCam

    indices = [resolve_block(encoder, layer) for layer in layers]
    blocks = block_modules(encoder)
    grid = encoder_grid(encoder, images)
    was_training = encoder.training
    encoder.eval()
    maps: dict[int, Tensor] = {}
    try:
        for index in indices:
            view = _GridView()
            with _grid_hook(blocks[index], view, encoder.num_prefix_tokens, grid):
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
    ``iou`` in [0, 1] (top-``topk`` fraction of the map vs the mask), ``zero`` 0/1 for all-zero maps."""

    pointing: np.ndarray
    energy: np.ndarray
    iou: np.ndarray
    zero: np.ndarray
    topk: float


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of (B, h, w) maps to ``size`` (H, W) pixels (as pytorch-grad-cam's cv2.resize)."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def localization_scores(maps: Tensor, boxes: Tensor, masks: Tensor, *, topk: float = 0.15) -> LocalizationScores:
    """Score maps (B, h, w) against object boxes (B, H, W) bool and masks (B, H, W) bool, in the maps'
    upsampled frame (H, W). ``topk`` is the fraction of pixels (the highest-valued) kept for the IoU."""
    if not 0.0 < topk <= 1.0:
        raise ValueError(f"topk must be a fraction in (0, 1], got {topk}")
    if boxes.shape != masks.shape or boxes.shape[0] != maps.shape[0]:
        raise ValueError(f"maps {tuple(maps.shape)}, boxes {tuple(boxes.shape)} and masks {tuple(masks.shape)} must cover the same items")
    full = upsample(maps, tuple(boxes.shape[-2:])).clamp_min(0.0).flatten(1)
    boxes, masks = boxes.flatten(1), masks.flatten(1)
    total = full.sum(dim=1)
    zero = total <= 0
    peak = full.argmax(dim=1)
    pointing = boxes.gather(1, peak[:, None])[:, 0] & ~zero
    energy = torch.where(zero, torch.zeros_like(total), (full * boxes).sum(dim=1) / total.clamp_min(1e-30))
    keep = max(1, round(topk * full.shape[1]))
    top = torch.zeros_like(boxes)
    top.scatter_(1, full.topk(keep, dim=1).indices, True)
    union = (top | masks).sum(dim=1).clamp_min(1)
    iou = torch.where(zero, torch.zeros_like(total), (top & masks).sum(dim=1) / union)
    as_np = lambda t: t.double().cpu().numpy()
    return LocalizationScores(as_np(pointing), as_np(energy), as_np(iou), as_np(zero), topk)
